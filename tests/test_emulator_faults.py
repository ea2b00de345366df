"""Fault injection, seen from the real kubernetes_asyncio client.

Each test gives one simulated client its own endpoint and breaks only that client's connection.
Times are real but short; bounds are loose on the slow side only.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

NS = "default"


def lease_body(name: str, **spec: Any) -> Any:
    """A Lease as plain JSON (the client sends dicts as they are)."""
    return {"metadata": {"name": name}, "spec": spec}


def status_of(exc: ApiException) -> Any:
    return json.loads(exc.body or "")


def header(exc: ApiException, name: str) -> str | None:
    return None if exc.headers is None else exc.headers.get(name)


def holder(emu: KubeEmulator, name: str = "x") -> Any:
    lease = emu.get_object("leases", NS, name)
    assert lease is not None
    return lease["spec"]["holderIdentity"]


async def leases(emu: KubeEmulator, name: str) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(await emu.api_client(name))


async def seeded(emu: KubeEmulator) -> client.CoordinationV1Api:
    """A client "setup" that created lease "x" (holder "a")."""
    api = await leases(emu, "setup")
    await api.create_namespaced_lease(NS, lease_body("x", holderIdentity="a"))
    return api


def elapsed_since(started: float) -> float:
    return asyncio.get_running_loop().time() - started


async def test_latency_delays_only_that_client(emu: KubeEmulator) -> None:
    await seeded(emu)
    slow, fast = await leases(emu, "slow"), await leases(emu, "fast")
    emu.faults("slow").latency = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await fast.read_namespaced_lease("x", NS)
    assert elapsed_since(started) < 0.25
    started = loop.time()
    await slow.read_namespaced_lease("x", NS)
    assert elapsed_since(started) >= 0.3


async def test_reply_latency_applies_the_write_first(emu: KubeEmulator) -> None:
    setup = await seeded(emu)
    writer = await leases(emu, "writer")
    emu.faults("writer").reply_latency = 0.5
    task = asyncio.ensure_future(
        writer.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "w"}})
    )
    await asyncio.sleep(0.2)
    assert (await setup.read_namespaced_lease("x", NS)).spec.holder_identity == "w"
    assert not task.done()
    assert (await task).spec.holder_identity == "w"


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (500, "InternalError", "Internal error occurred: injected by aioleader emulator"),
        (503, "ServiceUnavailable", "the server is currently unable to handle the request"),
        (504, "Timeout", "Timeout: request did not complete within the allowed duration"),
    ],
)
async def test_fail_next_answers_a_status(
    emu: KubeEmulator, code: int, reason: str, message: str
) -> None:
    api = await seeded(emu)
    emu.faults("setup").fail_next(code)
    with pytest.raises(ApiException) as info:
        await api.read_namespaced_lease("x", NS)
    body = status_of(info.value)
    assert (info.value.status, body["code"], body["reason"], body["message"]) == (
        code,
        code,
        reason,
        message,
    )
    assert (await api.read_namespaced_lease("x", NS)).metadata.name == "x"  # one shot


async def test_too_many_requests_carries_retry_after(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").fail_next(429, retry_after=2)
    with pytest.raises(ApiException) as info:
        await api.read_namespaced_lease("x", NS)
    assert info.value.status == 429
    assert header(info.value, "Retry-After") == "2"
    body = status_of(info.value)
    assert (body["reason"], body["details"]) == ("TooManyRequests", {"retryAfterSeconds": 2})


async def test_fail_next_with_a_proxy_page(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    emu.faults("setup").fail_next(502, body=page, content_type="text/html")
    with pytest.raises(ApiException) as info:
        await api.read_namespaced_lease("x", NS)
    assert (info.value.status, str(info.value.body)) == (502, page)
    assert header(info.value, "Content-Type") == "text/html"


async def test_faults_can_target_verbs(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").fail_next(503, count=2, verbs={"update", "patch"})
    lease = await api.read_namespaced_lease("x", NS)  # not an update: untouched
    with pytest.raises(ApiException) as info:
        await api.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "b"}})
    assert info.value.status == 503
    lease.spec.holder_identity = "c"
    with pytest.raises(ApiException):
        await api.replace_namespaced_lease("x", NS, lease)
    assert (await api.replace_namespaced_lease("x", NS, lease)).spec.holder_identity == "c"
    with pytest.raises(ValueError, match="unknown verbs"):
        emu.faults().fail_next(500, verbs={"put"})


async def test_error_rate_is_repeatable(emu: KubeEmulator) -> None:
    api = await seeded(emu)

    async def outcomes() -> list[int]:
        emu.faults("setup").reseed("chaos")
        emu.faults("setup").error_rate = 0.5
        codes = []
        for _ in range(20):
            try:
                await api.read_namespaced_lease("x", NS)
                codes.append(200)
            except ApiException as exc:
                codes.append(exc.status)
        return codes

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {200, 500}
    assert sum(r.fault == "error_rate" for r in emu.requests) == 2 * first.count(500)


async def test_drop_resets_the_connection_before_handling(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").drop_next(verbs={"patch"})
    # PATCH is not idempotent, so aiohttp does not retry it: the caller sees the disconnect.
    with pytest.raises(aiohttp.ClientError):
        await api.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "dropped"}})
    assert holder(emu) == "a"
    assert [(r.verb, r.status, r.fault) for r in emu.requests[-1:]] == [("patch", 0, "drop")]


async def test_aiohttp_retries_an_idempotent_request_once(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").drop_next()
    assert (await api.read_namespaced_lease("x", NS)).metadata.name == "x"  # retried, silently
    emu.faults("setup").drop_next(2)
    with pytest.raises(aiohttp.ClientError):
        await api.read_namespaced_lease("x", NS)
    assert [r.fault for r in emu.requests[-4:]] == ["drop", None, "drop", "drop"]


async def test_apply_then_drop_loses_the_reply_not_the_write(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").apply_then_drop()
    with pytest.raises(aiohttp.ClientError):
        await api.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "b"}})
    assert (await api.read_namespaced_lease("x", NS)).spec.holder_identity == "b"


async def test_apply_then_drop_of_a_put_conflicts_with_itself(emu: KubeEmulator) -> None:
    # aiohttp resends the (idempotent) PUT after the disconnect; the first one was applied, so
    # the resent one carries a stale resourceVersion: the writer sees a 409 for its own write.
    api = await seeded(emu)
    lease = await api.read_namespaced_lease("x", NS)
    lease.spec.holder_identity = "b"
    emu.faults("setup").apply_then_drop(verbs={"update"})
    with pytest.raises(ApiException) as info:
        await api.replace_namespaced_lease("x", NS, lease)
    assert info.value.status == 409
    assert holder(emu) == "b"


async def test_hang_holds_requests_until_cleared(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    faults = emu.faults("setup")
    faults.hang = True
    with pytest.raises(asyncio.TimeoutError):
        await api.read_namespaced_lease("x", NS, _request_timeout=0.3)
    await asyncio.sleep(0.05)
    assert emu.statistics().in_flight == 0  # the abandoned request did not linger
    pending = asyncio.ensure_future(api.read_namespaced_lease("x", NS))
    await asyncio.sleep(0.2)
    assert not pending.done()
    faults.hang = False
    assert (await asyncio.wait_for(pending, 1)).metadata.name == "x"


async def test_stop_is_prompt_with_hung_requests_and_open_watches() -> None:
    emu = KubeEmulator()
    await emu.start()
    api = await leases(emu, "a")
    emu.faults("a").hang = True
    hung = asyncio.ensure_future(api.list_namespaced_lease(NS))
    blackholed = asyncio.ensure_future((await leases(emu, "b")).list_namespaced_lease(NS))
    emu.faults("b").partition("blackhole")
    watcher = watch.Watch()
    stream = watcher.stream((await leases(emu, "c")).list_namespaced_lease, NS)
    watching = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.2)
    assert emu.statistics().watches == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    await emu.stop()
    assert loop.time() - started < 1
    assert emu.statistics().watches == 0
    assert emu.statistics().in_flight == 0
    for task in (hung, blackholed, watching):
        with pytest.raises((aiohttp.ClientError, ApiException, asyncio.CancelledError)):
            await task
    await watcher.close()


async def test_refuse_partition_and_heal_on_the_same_port(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    ep = await emu.endpoint("setup")
    port = ep.port
    ep.faults.partition("refuse")
    with pytest.raises(aiohttp.ClientConnectorError):
        await api.read_namespaced_lease("x", NS)
    other = await leases(emu, "other")  # the others carry on
    assert (await other.read_namespaced_lease("x", NS)).metadata.name == "x"
    ep.faults.heal()
    assert ep.port == port
    assert (await api.read_namespaced_lease("x", NS)).metadata.name == "x"


async def test_blackhole_answers_nothing_until_healed(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    faults = emu.faults("setup")
    faults.partition("blackhole")
    with pytest.raises(asyncio.TimeoutError):
        await api.read_namespaced_lease("x", NS, _request_timeout=0.3)
    waiting = asyncio.ensure_future(
        api.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "late"}})
    )
    await asyncio.sleep(0.2)
    assert holder(emu) == "a"
    faults.heal()
    assert (await asyncio.wait_for(waiting, 1)).spec.holder_identity == "late"


async def watch_types(api: client.CoordinationV1Api, timeout: int = 2, **kwargs: Any) -> list[Any]:
    seen: list[Any] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(
            api.list_namespaced_lease, NS, timeout_seconds=timeout, **kwargs
        ):
            seen.append(event if isinstance(event, str) else event["type"])
    return seen


async def test_watch_eof_after_some_events(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    await api.create_namespaced_lease(NS, lease_body("y"))
    await api.create_namespaced_lease(NS, lease_body("z"))
    emu.faults("setup").watch_eof_after(events=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await watch_types(api) == ["ADDED", "ADDED"]
    assert loop.time() - started < 1  # well before timeoutSeconds
    assert await watch_types(api, timeout=1) == ["ADDED", "ADDED", "ADDED"]


async def test_watch_expire(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").watch_expire()
    with pytest.raises(ApiException) as info:
        await watch_types(api)
    assert info.value.status == 410
    assert str(info.value.reason).startswith("Expired: too old resource version: ")
    assert emu.requests[-1].fault == "watch_expire"


async def test_watch_silence_holds_events_and_bookmarks(emu: KubeEmulator) -> None:
    await seeded(emu)
    writer = await leases(emu, "writer")
    faults = emu.faults("setup")
    path = f"{(await emu.endpoint('setup')).url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            path, params={"watch": "1", "allowWatchBookmarks": "1", "timeoutSeconds": "5"}
        ) as resp,
    ):
        assert json.loads(await resp.content.readline())["type"] == "ADDED"
        faults.watch_silence = True
        await writer.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "b"}})
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.5)  # no event, no bookmark
        faults.watch_silence = False
        event = json.loads(await asyncio.wait_for(resp.content.readline(), 1))
        assert (event["type"], event["object"]["spec"]["holderIdentity"]) == ("MODIFIED", "b")


async def test_watch_garbage_line(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    emu.faults("setup").watch_garbage_next()
    seen = await watch_types(api, timeout=1)
    # kubernetes_asyncio hands a line it cannot parse through as a string.
    assert len(seen) == 2
    assert isinstance(seen[0], str)
    assert seen[1] == "ADDED"


async def test_restart_keeps_state_and_resets_connections(emu: KubeEmulator) -> None:
    api = await seeded(emu)
    before = emu.revision
    restart = asyncio.ensure_future(emu.restart(downtime=0.3))
    await asyncio.sleep(0.1)
    with pytest.raises(aiohttp.ClientConnectorError):
        await api.read_namespaced_lease("x", NS)
    await restart
    assert (await api.read_namespaced_lease("x", NS)).spec.holder_identity == "a"
    assert emu.revision == before


async def test_request_log_and_counters_per_client(emu: KubeEmulator) -> None:
    a, b = await leases(emu, "a"), await leases(emu, "b")
    await a.create_namespaced_lease(NS, lease_body("x"))
    await a.read_namespaced_lease("x", NS)
    await b.read_namespaced_lease("x", NS)
    await b.patch_namespaced_lease("x", NS, {"spec": {"holderIdentity": "b"}})
    with pytest.raises(ApiException):
        await b.read_namespaced_lease("missing", NS)
    assert emu.counters("a") == {"create": 1, "get": 1}
    assert emu.counters("b") == {"get": 2, "patch": 1}
    last = emu.requests[-1]
    assert (
        last.client,
        last.verb,
        last.group,
        last.resource,
        last.namespace,
        last.name,
        last.status,
    ) == (
        "b",
        "get",
        "coordination.k8s.io",
        "leases",
        NS,
        "missing",
        404,
    )
    assert last.duration >= 0
    assert emu.requests[0].started <= last.started
    emu.reset_log()
    assert emu.counters() == {}
