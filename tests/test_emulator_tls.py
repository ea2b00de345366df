"""The emulator's HTTPS and authentication (``KubeEmulator(tls=..., token=..., client_ca=...)``),
and the fast path of its MicroTime decoder, through the real kubernetes_asyncio client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import load_kube_config

from aioleader.testing import KubeEmulator
from aioleader.testing._decode import (
    _CANONICAL_MICRO,
    _CANONICAL_SECONDS,
    RFC3339,
    RFC3339_MICRO,
    DecodeError,
    _canonical_time,
    format_micro_time,
    format_time,
    parse_go_time,
)

pytestmark = pytest.mark.emulator_only

NS = "default"


async def _list_leases(api: ApiClient) -> Any:
    return await CoordinationV1Api(api).list_namespaced_lease(NS)


@pytest.mark.asyncio
async def test_a_token_is_required_and_can_be_rotated() -> None:
    async with KubeEmulator(tls=True, token="t-0") as emu:
        assert emu.url.startswith("https://")
        before = await emu.api_client("a")  # "auto": the token
        await _list_leases(before)
        anonymous = await emu.api_client("b", auth="none")
        with pytest.raises(ApiException) as caught:
            await _list_leases(anonymous)
        assert caught.value.status == 401
        assert json.loads(caught.value.body or b"") == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        emu.set_token("t-1")
        assert emu.tokens == {"t-1"}
        with pytest.raises(ApiException, match="401"):
            await _list_leases(before)  # still "t-0"
        await _list_leases(await emu.api_client("c"))  # configured now: "t-1"
        assert [r.status for r in emu.requests] == [200, 401, 401, 200]


@pytest.mark.asyncio
async def test_client_certificates_issued_by_its_ca_are_admitted() -> None:
    async with KubeEmulator(tls=True, client_ca=True) as emu:
        await _list_leases(await emu.api_client("a"))  # "auto": a certificate
        cert = emu.client_certificate("a")
        assert cert.cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert emu.client_certificate("a") is cert  # issued once
        with pytest.raises(ApiException, match="401"):
            await _list_leases(await emu.api_client("b", auth="none"))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "auth"),
    [({"token": "s3cret"}, "token"), ({"client_ca": True}, "certificate")],
)
async def test_its_kubeconfig_works_with_kubernetes_asyncio(
    tmp_path: Path, options: dict[str, Any], auth: str
) -> None:
    async with KubeEmulator(tls=True, **options) as emu:
        kubeconfig = await emu.kubeconfig("a", auth=auth, namespace="ns")
        assert kubeconfig["contexts"][0]["context"]["namespace"] == "ns"
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration()
        await load_kube_config(
            config_file=str(path), client_configuration=configuration, persist_config=False
        )
        async with ApiClient(configuration) as api:
            await _list_leases(api)
        assert [r.status for r in emu.requests] == [200]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="client_ca=True needs tls=True"):
        KubeEmulator(client_ca=True)
    with pytest.raises(ValueError, match="non-empty string without spaces"):
        KubeEmulator(tls=True, token=" padded ")


@pytest.mark.asyncio
async def test_set_token_needs_an_emulator_that_checks_tokens() -> None:
    async with KubeEmulator() as emu:
        with pytest.raises(RuntimeError, match="checks no credentials"):
            emu.set_token("x")
        with pytest.raises(RuntimeError, match="plain HTTP"):
            _ = emu.ca_file


_fields = st.tuples(
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.integers(0, 999999),
)


@pytest.mark.parametrize("micro", [True, False], ids=["MicroTime", "Time"])
@given(fields=_fields)
def test_the_canonical_time_fast_path_agrees_with_the_parser(
    micro: bool, fields: tuple[int, ...]
) -> None:
    year, month, day, hour, minute, second, fraction = fields
    value = f"{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
    value += f".{fraction:06}Z" if micro else "Z"
    layout, render = (RFC3339_MICRO, format_micro_time) if micro else (RFC3339, format_time)
    try:
        general: str | None = render(parse_go_time(value, layout))
    except DecodeError:
        general = None
    if _canonical_time(value, _CANONICAL_MICRO if micro else _CANONICAL_SECONDS):
        assert general == value
    else:
        # What the fast path leaves to the parser: invalid, the years it renders differently.
        assert general is None or fields[0] < 1000
