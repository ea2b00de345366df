"""The decisions of a coordinated leader election controller (KEP-4355), pure and synchronous.

kube-apiserver's election controller (``pkg/controlplane/controller/leaderelection``) and
aioleader's own (``aioleader coordinate``, `aioleader.kubernetes._coordinator`) decide the
same way, one *election step* at a time, from the current Lease and LeaseCandidates alone (the
JSON objects as the API serves them) and ``now``:

1. An election is needed when the Lease is missing, expired or free, when a candidate has not
   renewed for half the candidate lifetime (15 min), or when the strategy is one this controller
   handles and its best candidate is not the holder.
2. Candidates whose ``renewTime`` is older than the election window (5 s) are *pinged*: the
   controller writes ``spec.pingTime``; a candidate acknowledges by writing a ``renewTime`` no
   earlier than the ping. The vote waits until every pinged candidate has answered or the
   window since its ping has passed, and counts only candidates that renewed within the window.
3. The strategy is the one of the candidate with the newest binary version; candidates that
   disagree at the same binary version stop the election (an error, nothing is written).
4. The strategy picks the electee ([`Strategy`][Strategy]: a pure function from the candidates that
   answered to the best one). A missing Lease is created for it (``holderIdentity``,
   ``strategy``, ``leaseDurationSeconds: 5``, ``renewTime: now``). A free or expired Lease is
   assigned to it the same way (``preferredHolder`` and ``acquireTime`` cleared,
   ``leaseTransitions`` kept). A Lease held by another live holder only gets
   ``preferredHolder`` set: the holder is expected to step down (an aioleader leader releases
   at once; client-go lets the lease expire).
5. Strategies the controller does not handle are left to other controllers: the Lease is created
   (or updated) with that ``strategy`` and no holder, and a held one is not touched.

Which strategies a controller handles is the ``strategies`` mapping of [`election_step()`][election_step]:
kube-apiserver handles [`OLDEST_EMULATION_VERSION`][OLDEST_EMULATION_VERSION] ([`BUILTIN_STRATEGIES`][BUILTIN_STRATEGIES]);
``aioleader coordinate`` handles [`HIGHEST_PRIORITY`][HIGHEST_PRIORITY] ([`AIOLEADER_STRATEGIES`][AIOLEADER_STRATEGIES]). Adding
a strategy is writing one such function and registering it under a qualified name
(``example.com/MyStrategy``: the API accepts any name with a ``/`` besides the built-in one).

Versions are read leniently (``v1.30``, ``1.30``); a candidate whose versions do not parse is
never elected by [`OLDEST_EMULATION_VERSION`][OLDEST_EMULATION_VERSION]. Where the Go code is ambiguous the reading that
cannot crash or loop is taken: an acknowledgement at exactly the ping time counts, and with a
strategy the controller does not handle the holder of an existing Lease is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from . import _semver as semver
from ._record import format_micro_time, parse_time

__all__ = [
    "AIOLEADER_STRATEGIES",
    "BUILTIN_STRATEGIES",
    "CANDIDATE_LIFETIME",
    "ELECTION_WINDOW",
    "HIGHEST_PRIORITY",
    "LEASE_DURATION",
    "OLDEST_EMULATION_VERSION",
    "PRIORITY_LABEL",
    "ElectionStep",
    "Strategy",
    "candidate_expired",
    "election_step",
    "expired_candidates",
    "lease_expired",
    "pick_highest_priority",
    "pick_oldest_emulation_version",
    "pick_strategy",
    "priority_of",
]

#: The strategy kube-apiserver implements.
OLDEST_EMULATION_VERSION: Final = "OldestEmulationVersion"
#: aioleader's priority strategy: the highest `PRIORITY_LABEL` leads.
HIGHEST_PRIORITY: Final = "aioleader.dev/HighestPriority"
#: The LeaseCandidate label that [`HIGHEST_PRIORITY`][HIGHEST_PRIORITY] reads (a decimal integer).
PRIORITY_LABEL: Final = "aioleader.dev/priority"
#: ``electionDuration``: how long pinged candidates have to answer (and the requeue interval).
ELECTION_WINDOW: Final = 5.0
#: ``leaseCandidateValidDuration``: a candidate not renewed for this long is out (and collected).
CANDIDATE_LIFETIME: Final = 30 * 60.0
#: ``defaultLeaseDurationSeconds`` of a Lease the controller creates or assigns.
LEASE_DURATION: Final = 5

#: An object as the API serves it (a LeaseCandidate or a Lease, as parsed JSON).
Object = Mapping[str, Any]
#: A strategy: from the candidates that answered (never empty), the one that should lead, or
#: ``None`` if none of them can. Pure: no I/O, no clock; ties must be broken deterministically.
Strategy = Callable[[Sequence[Object]], Object | None]


def _time(spec: Object, key: str) -> datetime | None:
    """A stored time; None when unset or not a time."""
    return parse_time(spec.get(key))


def _spec(obj: Object) -> Object:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _metadata(obj: Object) -> Object:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _name(obj: Object) -> str:
    return str(_metadata(obj).get("name") or "")


def _version(obj: Object, key: str) -> semver.Version | None:
    try:
        return semver.parse_tolerant(str(_spec(obj).get(key) or ""))
    except ValueError:
        return None


def lease_expired(lease: Object, now: datetime) -> bool:
    """``isLeaseExpired``: no renewTime or duration, or renewTime + duration before now."""
    spec = _spec(lease)
    renew = _time(spec, "renewTime")
    duration = spec.get("leaseDurationSeconds")
    if renew is None or not isinstance(duration, int) or isinstance(duration, bool):
        return True
    return renew + timedelta(seconds=duration) < now


def candidate_expired(
    candidate: Object, now: datetime, lifetime: float = CANDIDATE_LIFETIME
) -> bool:
    """``isLeaseCandidateExpired``: never renewed, or not within ``lifetime``."""
    renew = _time(_spec(candidate), "renewTime")
    return renew is None or renew + timedelta(seconds=lifetime) < now


def pick_strategy(candidates: Sequence[Object]) -> tuple[str, str | None]:
    """``pickBestStrategy``: (the newest binary version's strategy, error or None)."""
    first = candidates[0]
    name, strategy = _name(first), str(_spec(first).get("strategy") or "")
    highest = _version(first, "binaryVersion") or semver.ZERO
    for candidate in candidates[1:]:
        binary = _version(candidate, "binaryVersion") or semver.ZERO
        theirs = str(_spec(candidate).get("strategy") or "")
        order = highest.compare(binary)
        if order < 0:
            name, strategy, highest = _name(candidate), theirs, binary
        elif order == 0 and theirs != strategy:
            return "", (
                f'candidates "{name}", "{_name(candidate)}" at same binary version but received '
                f"differing strategies {strategy}, {theirs}"
            )
    return strategy, None


def _older(left: Object, right: Object) -> bool:
    """Whether ``right`` was created before ``left`` (unknown times: no)."""
    left_created = _time(_metadata(left), "creationTimestamp")
    right_created = _time(_metadata(right), "creationTimestamp")
    return left_created is not None and right_created is not None and left_created > right_created


def _compare(left: Object, right: Object) -> int:
    """-1 if ``left`` should lead rather than ``right``, 1 otherwise (never 0)."""
    for key in ("emulationVersion", "binaryVersion"):
        order = (_version(left, key) or semver.ZERO).compare(_version(right, key) or semver.ZERO)
        if order:
            return order
    return 1 if _older(left, right) else -1


def pick_oldest_emulation_version(candidates: Iterable[Object]) -> Object | None:
    """``pickBestLeaderOldestEmulationVersion``: the oldest versions, then the oldest object."""
    electee: Object | None = None
    for candidate in candidates:
        if _version(candidate, "emulationVersion") is None:
            continue
        if _version(candidate, "binaryVersion") is None:
            continue
        if electee is None or _compare(electee, candidate) > 0:
            electee = candidate
    return electee


def priority_of(candidate: Object) -> int | None:
    """The candidate's `PRIORITY_LABEL` as an integer: 0 without the label, ``None`` if
    the label is not a decimal integer (such a candidate is never elected)."""
    labels = _metadata(candidate).get("labels")
    value = labels.get(PRIORITY_LABEL) if isinstance(labels, Mapping) else None
    if value is None:
        return 0
    text = str(value)
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)


def pick_highest_priority(candidates: Iterable[Object]) -> Object | None:
    """[`HIGHEST_PRIORITY`][HIGHEST_PRIORITY]: the highest priority label, then the oldest object, then the
    first in the order given."""
    electee: Object | None = None
    best = 0
    for candidate in candidates:
        priority = priority_of(candidate)
        if priority is None:
            continue
        if electee is None or priority > best or (priority == best and _older(electee, candidate)):
            electee, best = candidate, priority
    return electee


#: What kube-apiserver's controller handles.
BUILTIN_STRATEGIES: Final[Mapping[str, Strategy]] = {
    OLDEST_EMULATION_VERSION: pick_oldest_emulation_version
}
#: What ``aioleader coordinate`` handles (kube-apiserver keeps ``OldestEmulationVersion``).
AIOLEADER_STRATEGIES: Final[Mapping[str, Strategy]] = {HIGHEST_PRIORITY: pick_highest_priority}


def _election_needed(
    candidates: Sequence[Object],
    lease: Object | None,
    now: datetime,
    lifetime: float,
    strategies: Mapping[str, Strategy],
) -> tuple[bool, str | None]:
    if lease is None or lease_expired(lease, now):
        return True, None
    holder = _spec(lease).get("holderIdentity")
    if not holder:
        return True, None
    # Every half lifetime an election runs anyway, so that live candidates get pinged (and
    # renew) before the garbage collector would take them.
    for candidate in candidates:
        renew = _time(_spec(candidate), "renewTime")
        if renew is not None and renew + timedelta(seconds=lifetime / 2) < now:
            return True, None
    strategy, error = pick_strategy(candidates)
    if error is not None:
        return False, error
    pick = strategies.get(strategy)
    if pick is None:
        return False, None
    best = pick(candidates)
    return best is not None and _name(best) != holder, None


@dataclass(frozen=True)
class ElectionStep:
    """What one election step decided for one Lease.

    ``pings``: candidates to ping (``pingTime = now``). ``lease``: the Lease to write (a whole
    object: created when ``create``, else an update of the stored one carrying its
    resourceVersion), or None. ``requeue``: seconds until the next step, or None (only an
    event brings it back). ``error``: why the step stopped, as the controller logs it.
    """

    pings: tuple[str, ...] = ()
    lease: dict[str, Any] | None = None
    create: bool = False
    requeue: float | None = None
    error: str | None = None
    reason: str = field(default="", compare=False)


def election_step(
    namespace: str,
    lease_name: str,
    lease: Object | None,
    candidates: Iterable[Object],
    now: datetime,
    *,
    window: float = ELECTION_WINDOW,
    lifetime: float = CANDIDATE_LIFETIME,
    strategies: Mapping[str, Strategy] = BUILTIN_STRATEGIES,
) -> ElectionStep:
    """``reconcileElectionStep`` for the Lease ``namespace/lease_name``.

    ``candidates`` are the namespace's LeaseCandidates for this Lease (any order is fine;
    ties on everything else go to the first); ``lease`` is the stored Lease or None;
    ``strategies`` are the ones this controller decides (others are left alone).
    """
    span = timedelta(seconds=window)
    live = [c for c in candidates if not candidate_expired(c, now, lifetime)]
    if not live:
        return ElectionStep(reason="no live candidates")
    needed, error = _election_needed(live, lease, now, lifetime, strategies)
    if not needed:
        return ElectionStep(requeue=window, error=error, reason="no election needed")

    can_vote = True
    pings: list[str] = []
    for candidate in live:
        spec = _spec(candidate)
        ping, renew = _time(spec, "pingTime"), _time(spec, "renewTime")
        if ping is not None and ping + span > now and renew is not None and renew < ping:
            can_vote = False  # pinged, not answered yet, still within the window
            continue
        if renew is not None and renew + span > now:
            continue  # renewed recently enough to vote for
        # A candidate that never answered its last ping is not pinged again (it just loses).
        if ping is None or (ping + span < now and renew is not None and ping <= renew):
            pings.append(_name(candidate))
            can_vote = False
    if not can_vote:
        return ElectionStep(tuple(pings), requeue=window, reason="waiting for acknowledgements")

    for candidate in live:
        spec = _spec(candidate)
        ping, renew = _time(spec, "pingTime"), _time(spec, "renewTime")
        if ping is None or (renew is not None and ping <= renew):
            continue
        if ping + span > now:
            return ElectionStep(reason="waiting for acknowledgements")

    acked = [
        c
        for c in live
        if (renew := _time(_spec(c), "renewTime")) is not None and renew + span > now
    ]
    if not acked:
        return ElectionStep(error="no available candidates")
    strategy, error = pick_strategy(acked)
    if error is not None:
        return ElectionStep(error=error)
    holder: str | None = None
    pick = strategies.get(strategy)
    if pick is not None:
        electee = pick(acked)
        if electee is None:
            if strategy == OLDEST_EMULATION_VERSION:
                return ElectionStep(error="should not happen, could not find suitable electee")
            return ElectionStep(
                requeue=window, error=f"no candidate can be elected with strategy {strategy}"
            )
        holder = _name(electee)

    stamp = format_micro_time(now)
    if lease is None:
        spec_out: dict[str, Any] = {}
        if holder is not None:
            spec_out["holderIdentity"] = holder
        spec_out.update(leaseDurationSeconds=LEASE_DURATION, renewTime=stamp, strategy=strategy)
        created = {"metadata": {"name": lease_name, "namespace": namespace}, "spec": spec_out}
        return ElectionStep(lease=created, create=True, requeue=window, reason="created")

    updated = copy.deepcopy(dict(lease))
    spec_out = dict(_spec(updated))
    current = spec_out.get("holderIdentity") or ""
    if spec_out.get("strategy") != strategy:
        spec_out["strategy"] = strategy
    if holder is not None and (not current or (lease_expired(lease, now) and current != holder)):
        spec_out.pop("preferredHolder", None)
        spec_out.pop("acquireTime", None)
        spec_out.update(holderIdentity=holder, renewTime=stamp, leaseDurationSeconds=LEASE_DURATION)
        reason = "assigned"
    elif holder is not None and holder != current:
        spec_out["preferredHolder"] = holder
        reason = "preferred holder"
    else:
        reason = "unchanged"
    if spec_out == _spec(lease):
        return ElectionStep(requeue=window, reason="already optimal")
    updated["spec"] = spec_out
    return ElectionStep(lease=updated, requeue=window, reason=reason)


def expired_candidates(
    candidates: Iterable[Object], now: datetime, lifetime: float = CANDIDATE_LIFETIME
) -> list[tuple[str, str]]:
    """The garbage collector's pick: (namespace, name) of candidates not renewed in time."""
    return [
        (str(_metadata(c).get("namespace") or ""), _name(c))
        for c in candidates
        if candidate_expired(c, now, lifetime)
    ]
