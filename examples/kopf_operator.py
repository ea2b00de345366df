"""A kopf operator whose replicas all reconcile, while only the leader writes status.

It summarizes ConfigMaps labelled ``aioleader.example/summarize=true``: every replica watches them
and computes the summary (a warm standby: a new leader needs no re-list), but only the elected
leader writes it back, as the annotations ``aioleader.example/summary`` and
``aioleader.example/summary-writer`` (the writer's identity and fencing token)::

    POD_NAME=op-1 python examples/kopf_operator.py --namespace default

Decisions worth copying:

* **The write is leader-gated and fenced.** ``await leadership.is_leader()`` right before the
  PATCH, which is bounded by what is left of the term (it cannot outlive the leadership) and
  carries the ConfigMap's ``resourceVersion`` (a 409 instead of a summary of stale data).
* **Takeover catches up.** A new leader writes, in ``on_started_leading``, every summary the old
  leader left unwritten (it may have been cut off before it could).
* **kopf writes nothing.** ``@kopf.on.event`` handlers keep no state on the objects (no
  finalizers, no progress annotations) and kopf posts Events for warnings only, so the
  followers' traffic is reads. Peering is off (``standalone``): the election decides who acts.
  Scanning is off: a namespaced operator with a namespaced Role cannot list Namespaces or CRDs.

kopf runs in a thread of its own, with its own event loop, as its embedding guide recommends:
``kopf.operator()`` takes every task that appears in its loop after it starts for its own, and
on stopping waits for them (up to 5 s) and cancels them, the election's tasks included. Its
handlers hand each event over to the main loop, where the election, the cache and the writes
live. kopf logs in the usual way
(in-cluster, else ``$KUBECONFIG``); the lock and the writes use a kubernetes_asyncio client loaded
from the same place. SIGTERM stops kopf, then the Lease is released so that another replica takes
over at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import kopf
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from aioleader import Leadership, Term, Timing, elect, stop_on_signals
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("kopf_operator")

LOCK_NAME = "kopf-summarizer"
LABEL = "aioleader.example/summarize"
SUMMARY = "aioleader.example/summary"
WRITER = "aioleader.example/summary-writer"


def summarize(data: Mapping[str, str] | None) -> str:
    """The status: how many keys, and a digest of the data."""
    data = data or {}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return f"{len(data)} keys, sha256:{digest}"


@dataclass(frozen=True)
class Seen:
    """A ConfigMap as last seen: the summary it needs and the one it has."""

    namespace: str
    name: str
    resource_version: str
    summary: str
    written: str | None


class Summarizer:
    """The operator's state. It lives in the main event loop, with the election."""

    def __init__(self, api_client: ApiClient) -> None:
        self.core = CoreV1Api(api_client)
        self.seen: dict[tuple[str, str], Seen] = {}

    async def reconcile(self, leadership: Leadership, event: str | None, seen: Seen) -> None:
        """Every replica keeps the summaries (a warm standby); only the leader writes them."""
        key = (seen.namespace, seen.name)
        if event == "DELETED":
            self.seen.pop(key, None)
            return
        self.seen[key] = seen
        if not await leadership.is_leader():
            log.info("%s/%s: %s (not written here: a follower)", *key, seen.summary)
            return
        term = leadership.term
        assert term is not None  # we lead
        await self.write(seen, term)

    async def catch_up(self, term: Term) -> None:
        """``on_started_leading``: write what the previous leader left unwritten."""
        for seen in list(self.seen.values()):
            await self.write(seen, term)

    async def write(self, seen: Seen, term: Term) -> None:
        """Write the summary if it is not there yet, within ``term`` and fenced by its token."""
        if seen.summary == seen.written:
            return
        remaining = term.deadline - anyio.current_time()
        if remaining <= 0 or not term.active:
            return
        patch = {
            "metadata": {
                # A 409 if the ConfigMap changed since: never a summary of stale data.
                "resourceVersion": seen.resource_version,
                "annotations": {
                    SUMMARY: seen.summary,
                    WRITER: f"{term.identity} {term.fencing_token}",
                },
            }
        }
        with anyio.move_on_after(remaining):  # never past the end of the term
            try:
                await self.core.patch_namespaced_config_map(
                    seen.name, seen.namespace, patch, _request_timeout=remaining
                )
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                log.info(
                    "%s/%s changed before the write: the watch brings the newer version",
                    seen.namespace,
                    seen.name,
                )
                return
            log.info(
                "%s/%s: wrote %r (fencing token %d)",
                seen.namespace,
                seen.name,
                seen.summary,
                term.fencing_token,
            )


@kopf.on.event("configmaps", labels={LABEL: "true"})
async def on_configmap(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """In kopf's thread: hand the event over to the main loop, and wait for it to be handled."""
    summarizer: Summarizer = memo["summarizer"]
    seen = Seen(
        namespace=body.metadata.namespace or "",
        name=body.metadata.name,
        resource_version=body.metadata["resourceVersion"],
        summary=summarize(body.get("data")),
        written=body.metadata.annotations.get(SUMMARY),
    )
    handled = summarizer.reconcile(memo["leadership"], type, seen)
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(handled, memo["loop"]))


def run_kopf(namespace: str, memo: kopf.Memo, stop_flag: threading.Event) -> None:
    """kopf's thread: the operator in an event loop of its own, until ``stop_flag`` is set."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # no kopf peering: the election decides who writes
    settings.scanning.disabled = True  # a namespaced Role cannot list Namespaces or CRDs
    settings.posting.level = logging.WARNING  # no Event per handler run in every replica
    asyncio.run(
        kopf.operator(settings=settings, namespaces=[namespace], memo=memo, stop_flag=stop_flag)
    )


async def load_api_client() -> ApiClient:
    """In a pod, the service account; elsewhere ``$KUBECONFIG`` or ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return ApiClient(configuration)
    return await config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


async def main(
    *,
    api_client: ApiClient | None = None,
    identity: str | None = None,
    namespace: str = "default",
    timing: Timing | None = None,
    stop: anyio.Event | None = None,
) -> None:
    """Run the operator in ``namespace`` until ``stop`` is set, or kopf stops."""
    stop = stop if stop is not None else anyio.Event()
    async with contextlib.AsyncExitStack() as stack:
        # One client for the lock and the writes: passed in, or loaded (and closed) here.
        if api_client is None:
            api_client = await load_api_client()
            stack.push_async_callback(api_client.close)
        summarizer = Summarizer(api_client)
        lock = LeaseLock(LOCK_NAME, namespace, identity, api_client=api_client)
        leadership = await stack.enter_async_context(
            elect(lock, timing=timing, on_started_leading=summarizer.catch_up)
        )
        memo = kopf.Memo(
            summarizer=summarizer, leadership=leadership, loop=asyncio.get_running_loop()
        )
        kopf_stop = threading.Event()

        async def operator() -> None:
            await anyio.to_thread.run_sync(run_kopf, namespace, memo, kopf_stop)
            tg.cancel_scope.cancel()  # kopf stopped by itself: so do we

        async with anyio.create_task_group() as tg:
            tg.start_soon(operator)
            try:
                await stop.wait()
            finally:
                kopf_stop.set()  # kopf cancels the handlers in flight and returns
    # Out of the stack: kopf has stopped, the leader's writes are over, the Lease is released.


def _arguments() -> argparse.Namespace:
    default = Timing()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "default")
    parser.add_argument("--lease-duration", type=float, default=default.lease_duration)
    parser.add_argument("--renew-deadline", type=float, default=default.renew_deadline)
    parser.add_argument("--retry-period", type=float, default=default.retry_period)
    return parser.parse_args()


async def run_until_signalled(namespace: str, timing: Timing) -> None:
    """Run until SIGTERM or Ctrl+C (or until kopf stops by itself): kopf stops, then the
    leader's writes are over and the Lease is released before the process exits."""
    async with stop_on_signals():
        await main(namespace=namespace, timing=timing)


if __name__ == "__main__":
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    anyio.run(run_until_signalled, args.namespace, timing)
