"""PodRoleLabel and LeaderEndpoints validate what they are given, and find the Pod's name,
namespace and IP in the Downward API environment, with clear errors when they are missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aioleader._options import TermHook
from aioleader.kubernetes import LeaderEndpoints, PodRoleLabel
from aioleader.kubernetes import _term_hook as term_hook


@pytest.fixture(autouse=True)
def no_downward_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("POD_NAME", "POD_NAMESPACE", "POD_IP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(term_hook, "SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "none"))


def test_both_are_term_hooks() -> None:
    assert isinstance(PodRoleLabel(pod="a", namespace="ns"), TermHook)
    assert isinstance(LeaderEndpoints("svc", [80], address="10.1.2.3", namespace="ns"), TermHook)


def test_the_pod_comes_from_the_downward_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="set POD_NAME from the Downward API"):
        PodRoleLabel(namespace="ns")
    monkeypatch.setenv("POD_NAME", "web-0")
    with pytest.raises(
        ValueError, match="needs the Pod's namespace: pass namespace=, set POD_NAMESPACE"
    ):
        PodRoleLabel()
    account = tmp_path / "namespace"
    account.write_text("from-account\n")
    monkeypatch.setattr(term_hook, "SERVICE_ACCOUNT_NAMESPACE", str(account))
    label = PodRoleLabel()
    assert (label.pod, label.namespace) == ("web-0", "from-account")
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert PodRoleLabel().namespace == "from-env"
    assert PodRoleLabel(namespace="given").namespace == "given"
    monkeypatch.setenv("POD_NAME", "Not_A_Name")
    with pytest.raises(ValueError, match="POD_NAME must be a DNS-1123 subdomain"):
        PodRoleLabel()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "bad key"}, "invalid key 'bad key'"),
        ({"leader": "not ok!"}, "invalid value 'not ok!'"),
        ({"leader": ""}, "leader must be a non-empty label value"),
        ({"leader": "same", "standby": "same"}, "leader and standby must differ"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"backoff_initial": 2, "backoff_max": 1}, "backoff_max .* must be at least"),
        ({"metrics": object()}, "metrics must be ElectionMetrics"),
    ],
)
def test_pod_role_label_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        PodRoleLabel(pod="a", namespace="ns", **kwargs)


def test_pod_role_label_standby_none_removes_the_label() -> None:
    label = PodRoleLabel("example.com/role", "primary", None, pod="a", namespace="ns")
    assert label.standby is None
    assert repr(label) == (
        "PodRoleLabel('example.com/role', leader='primary', standby=None, pod='a', namespace='ns')"
    )


def test_the_address_comes_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="set POD_IP from the Downward API"):
        LeaderEndpoints("svc", [80], namespace="ns")
    monkeypatch.setenv("POD_IP", "fd00::5")
    monkeypatch.setenv("POD_NAME", "web-1")
    endpoints = LeaderEndpoints("svc", [80], namespace="ns")
    assert (endpoints.address, endpoints.address_type, endpoints.pod) == (
        "fd00::5",
        "IPv6",
        "web-1",
    )
    assert endpoints.slice_name == "svc-leader"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("Svc", [80]), {}, "service must be a Service name"),
        (("svc", []), {}, "ports must be a non-empty list"),
        (("svc", "80"), {}, "ports must be a non-empty list"),
        (("svc", [0]), {}, r"ports\[0\]: the port must be 1-65535"),
        (("svc", [("HTTP", 80)]), {}, r"ports\[0\]: the name must be the Service port's name"),
        (("svc", [("a", 80, "QUIC")]), {}, "the protocol must be TCP, UDP or SCTP"),
        (("svc", [("a", 80), ("a", 81)]), {}, "the name 'a' is used twice"),
        (("svc", [1.5]), {}, r"ports\[0\] must be a port number"),
        (("svc", [80]), {"address": "pod-a"}, "address must be an IP address"),
        (("svc", [80]), {"address": "127.0.0.1"}, "address must be a Pod IP"),
        (("svc", [80]), {"slice_name": "Bad"}, "slice_name must be a DNS-1123 subdomain"),
    ],
)
def test_leader_endpoints_options(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaderEndpoints(*args, **{"address": "10.0.0.1", "namespace": "ns", **kwargs})
