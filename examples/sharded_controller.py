"""A sharded controller: every replica reads every object, each writes status only for the objects
in the shards it leads.

The objects are ConfigMaps labelled ``app=widget``. An object's shard is
``shards.shard_for("<namespace>/<name>")``; one worker per shard runs inside that shard's term
(``async with shards.leading(i)``), so its writes stop the moment the shard moves to another
replica, and each write carries the term's fencing token. Run several replicas::

    POD_NAME=pod-1 python examples/sharded_controller.py --shards 8
    POD_NAME=pod-2 python examples/sharded_controller.py --shards 8

Each replica leads about ``ceil(8 / replicas)`` shards; start or stop one and the shards move.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from aioleader import Shards, Timing, elect_shards, stop_on_signals
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("sharded_controller")

GROUP = "widgets"
STATUS = "widgets.example.com/status"


async def load_api_client() -> ApiClient:
    """In a pod, the service account; elsewhere ``$KUBECONFIG`` or ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return ApiClient(configuration)
    return await config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


class Controller:
    def __init__(self, api: ApiClient, namespace: str, interval: float) -> None:
        self.core = CoreV1Api(api)
        self.namespace = namespace
        self.interval = interval
        #: Every widget, by "namespace/name": what every replica sees.
        self.objects: dict[str, Any] = {}

    async def follow(self) -> None:
        """Read every widget, on every replica (a list every interval; an informer would do)."""
        while True:
            try:
                listing = await self.core.list_namespaced_config_map(
                    self.namespace, label_selector="app=widget", _request_timeout=5
                )
                self.objects = {
                    f"{o.metadata.namespace}/{o.metadata.name}": o for o in listing.items
                }
            except (ApiException, OSError, TimeoutError) as exc:
                log.warning("cannot list widgets: %s", exc)
            await anyio.sleep(self.interval)

    async def reconcile_shard(self, shards: Shards, index: int) -> None:
        """Write the status of the widgets in shard ``index`` while this replica leads it."""
        while True:
            async with shards.leading(index) as term:
                log.info("leading shard %d (fencing token %d)", index, term.fencing_token)
                status = f"{shards.identity} shard {index} token {term.fencing_token}"
                while True:
                    for key, obj in list(self.objects.items()):
                        if shards.shard_for(key) != index:
                            continue
                        annotations: Mapping[str, str] = obj.metadata.annotations or {}
                        if annotations.get(STATUS) != status:
                            await self.write_status(obj, status)
                    await anyio.sleep(self.interval)
            log.info("no longer leading shard %d", index)

    async def write_status(self, obj: Any, status: str) -> None:
        # A compare-and-swap on the version we read: a newer object is written on the next pass.
        obj.metadata.annotations = {**(obj.metadata.annotations or {}), STATUS: status}
        try:
            await self.core.replace_namespaced_config_map(
                obj.metadata.name, obj.metadata.namespace, obj, _request_timeout=5
            )
        except (ApiException, OSError, TimeoutError) as exc:
            log.info("status of %s not written (%s); retrying", obj.metadata.name, exc)


async def main(
    *,
    shards: int = 8,
    timing: Timing | None = None,
    interval: float = 0.2,
    namespace: str | None = None,
    identity: str | None = None,
) -> None:
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "default"
    api = await load_api_client()
    try:
        controller = Controller(api, namespace, interval)
        make_lock = partial(
            LeaseLock, namespace=namespace, identity=identity, api_client=api, events=False
        )
        async with (
            elect_shards(make_lock, group=GROUP, shards=shards, timing=timing) as group,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(controller.follow)
            for index in range(shards):
                tg.start_soon(controller.reconcile_shard, group, index)
            async for owned in group.owned_changes():
                log.info("owned shards: %s", sorted(owned))
    finally:
        await api.close()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--lease-duration", type=float, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10)
    parser.add_argument("--retry-period", type=float, default=2)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    return parser.parse_args()


async def run_until_signalled(args: argparse.Namespace) -> None:
    """Until SIGTERM or Ctrl+C: then every shard's work is cancelled and awaited and every Lease
    released, so the other replicas take the shards over at once."""
    timing = Timing(
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
    )
    async with stop_on_signals():
        await main(shards=args.shards, timing=timing, interval=args.interval)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    anyio.run(run_until_signalled, _parse())
