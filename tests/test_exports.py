"""The public surface (anyio's ``tests/test_all_attributes.py``, trio's ``_tests/test_exports.py``).

Every public package's ``__all__`` names exactly what it exports; the handles the library builds
are ``@final``; everything exported reports the public package as its ``__module__`` (so reprs,
tracebacks and docs say ``aioleader.Leadership``), and still pickles and resolves its type hints.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
import typing
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import pytest

import aioleader
from aioleader import LeaderElectionRecord, LeadershipStatistics, LockConflict, Timing

PACKAGES = ("aioleader", "aioleader.kubernetes", "aioleader.locks", "aioleader.testing")

#: Built by the library (or plain values) and not meant to be subclassed.
FINAL = {
    "aioleader": {
        # Handles and snapshots the library builds (trio's NoPublicConstructor, anyio's @final).
        "Leadership",
        "Term",
        "LeadershipStatistics",
        "Shards",
        "ShardStatistics",
        "HealthStatus",
        "LeaderChange",
        "LeaderChanges",
        "StopOnSignals",
        # Frozen values: subclassing would not change what the elector reads.
        "LeaderElectionRecord",
        "Observed",
        "Timing",
    },
    "aioleader.kubernetes": {
        "ConfigMapLock",
        "EndpointsLock",
        "LeaseLock",
        # Term hooks, configured by arguments.
        "LeaderEndpoints",
        "PodRoleLabel",
        # Coordinated election: a candidacy, the controller, and what listing returns.
        "LeaseCandidate",
        "Coordinator",
        "CandidateStatus",
    },
    "aioleader.locks": {"FileLock", "MultiLock"},
    "aioleader.testing": {
        "ChaosReport",
        "ShardChaosReport",
        "ClientCertificate",
        "ClientEndpoint",
        "EmulatorStatistics",
        "Faults",
        "KubeEmulator",
        "LockCall",
        "RequestRecord",
        "ServerClock",
        "WorkInterval",
    },
}

#: Meant to be subclassed or implemented, and why.
OPEN = {
    # Exceptions: custom locks raise their own subclasses (a transient LockError, ...).
    "aioleader": {
        "AioleaderError",
        "ClusterConfigError",
        "ElectionError",
        "ForbiddenError",
        "LockConflict",
        "LockError",
        "LockNotFound",
        # Interfaces to implement: custom locks, watch cursors, metrics sinks, candidacies,
        # term hooks, and the options TypedDict (extended by wrappers that add their own).
        "Lock",
        "WatchCursor",
        "ElectionMetrics",
        "ShardMetrics",
        "Candidacy",
        "TermHook",
        "ElectionOptions",
        # Extended with more collectors or labels by applications.
        "PrometheusMetrics",
    },
    "aioleader.kubernetes": set(),
    # Tests subclass MemoryLock to inject behaviour (a stuck or recording lock).
    "aioleader.locks": {"MemoryLock"},
    # FaultyLock: subclassed to inject new faults; TermLog: ChaosReport extends it.
    "aioleader.testing": {"FaultyLock", "TermLog", "MemoryLock"},
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _is_ours(obj: object) -> bool:
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
        obj, "__module__", ""
    ).split(".")[0] == "aioleader"


def _classes(package: str) -> dict[str, type]:
    module = _module(package)
    return {n: o for n in module.__all__ if inspect.isclass(o := getattr(module, n))}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exactly_what_the_package_exports(package: str) -> None:
    module = _module(package)
    assert isinstance(module.__all__, tuple)
    assert len(set(module.__all__)) == len(module.__all__), "a name twice in __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert [n for n in module.__all__ if n.startswith("_")] == []
    public = {n for n in vars(module) if not n.startswith("_")}
    unlisted = {n for n in public - set(module.__all__) if _is_ours(getattr(module, n))}
    assert unlisted == set(), f"public in {package} but not in __all__"
    # Public modules are the packages themselves; no private module is reachable by a public
    # name (``from ._x import y`` binds ``_x`` on the package, which is private, and fine).
    modules = {n for n in public if isinstance(getattr(module, n), ModuleType)}
    assert {n for n in modules if f"{package}.{n}" not in PACKAGES} == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_report_a_public_module(package: str) -> None:
    module = _module(package)
    for name in module.__all__:
        obj = getattr(module, name)
        if not _is_ours(obj):
            continue
        assert obj.__module__ in PACKAGES, f"{package}.{name} reports {obj.__module__}"
        assert getattr(_module(obj.__module__), obj.__name__) is obj
        if obj.__module__ == package:
            assert obj.__qualname__ == name


def test_an_object_exported_twice_reports_its_home_package() -> None:
    import aioleader.locks
    import aioleader.testing

    assert aioleader.testing.MemoryLock is aioleader.locks.MemoryLock
    assert aioleader.locks.MemoryLock.__module__ == "aioleader.locks"


def test_reprs_and_errors_name_the_public_package() -> None:
    assert repr(aioleader.Leadership) == "<class 'aioleader.Leadership'>"
    with pytest.raises(TypeError, match=r"^aioleader\.Leadership has no public constructor$"):
        aioleader.Leadership()
    record = LeaderElectionRecord(holder_identity="a", lease_duration_seconds=15)
    assert repr(record).startswith("LeaderElectionRecord(")


@pytest.mark.parametrize("package", PACKAGES)
def test_final_classes_are_final_and_the_rest_are_meant_to_be_subclassed(package: str) -> None:
    if sys.version_info < (3, 11):  # pragma: no cover - typing.final sets __final__ from 3.11
        pytest.skip("typing.final marks classes at run time from Python 3.11")
    classes = _classes(package)
    assert set(classes) == FINAL[package] | OPEN[package], "decide: final or open, and why"
    final = {n for n, cls in classes.items() if getattr(cls, "__final__", False)}
    assert final == FINAL[package]


@pytest.mark.parametrize("package", PACKAGES)
def test_type_hints_resolve_under_the_public_module(package: str) -> None:
    # A class's string annotations are looked up in the module its __module__ names (a
    # function's in its __globals__, which the rename leaves alone).
    for cls in _classes(package).values():
        if cls.__module__.startswith("aioleader"):
            hints = typing.get_type_hints(cls)
            assert set(inspect.get_annotations(cls)) <= set(hints)


NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)

VALUES: list[Any] = [
    Timing(),
    Timing.latency_sensitive(),
    LeaderElectionRecord(holder_identity="a", lease_duration_seconds=15, renew_time=NOW),
    LockConflict("the object has been modified"),
    LeadershipStatistics(
        lock="lease default/x",
        identity="a",
        is_leader=True,
        leader="a",
        term=1,
        fencing_token=0,
        terms=1,
        leader_changes=1,
        acquire_attempts=1,
        renewals=3,
        renew_failures=0,
        slow_path=0,
        last_renew_at=12.5,
        last_error=None,
    ),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_pickle_under_the_public_name(value: Any) -> None:
    data = pickle.dumps(value)
    assert f"{type(value).__module__}".encode() in data
    assert b"aioleader._" not in data
    copy = pickle.loads(data)
    assert type(copy) is type(value)
    if isinstance(value, BaseException):
        assert copy.args == value.args
    else:
        assert copy == value
