"""Run the emulator as a stand-alone API server.

``python -m aioleader.testing --port 8080 --kubeconfig ./emulator.kubeconfig`` serves until
SIGTERM or SIGINT and writes a kubeconfig for it, so unmodified programs (kubectl,
kubernetes_asyncio scripts, other leader-election libraries) can use it::

    KUBECONFIG=./emulator.kubeconfig kubectl get leases

When it is ready it prints one line, ``aioleader emulator listening on URL (kubeconfig: PATH)``;
with ``--port 0`` the line has the port that was picked. ``--coordinated-election`` runs
kube-apiserver's election controller for LeaseCandidates (``--election-window`` seconds, 5 by
default); ``--no-lease-candidates`` serves a cluster without the ``coordination.k8s.io/v1beta1``
API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ._emulator import KubeEmulator

CONTEXT = "aioleader-emulator"


def kubeconfig(server: str, namespace: str) -> str:
    """A kubeconfig (JSON is YAML) with one cluster, one context and a dummy token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": "aioleader-emulator"}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    return json.dumps(config, indent=2) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aioleader.testing",
        description="Serve the aioleader Kubernetes API emulator until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument(
        "--kubeconfig", type=Path, required=True, help="where to write a kubeconfig"
    )
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument(
        "--bookmark-interval", type=float, default=1.0, help="seconds between watch bookmarks (1)"
    )
    parser.add_argument(
        "--coordinated-election",
        action="store_true",
        help="run kube-apiserver's coordinated leader election controller (LeaseCandidates)",
    )
    parser.add_argument(
        "--election-window",
        type=float,
        default=5.0,
        help="the election controller's window in seconds (5, as kube-apiserver)",
    )
    parser.add_argument(
        "--no-lease-candidates",
        action="store_true",
        help="do not serve coordination.k8s.io/v1beta1 LeaseCandidates",
    )
    return parser


def _write_private(path: Path, text: str) -> None:
    # The token is a dummy, but a kubeconfig is a credential file: keep it private anyway.
    path.touch(mode=0o600)
    path.write_text(text)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    emulator = KubeEmulator(
        args.host,
        args.port,
        bookmark_interval=args.bookmark_interval,
        lease_candidates=not args.no_lease_candidates,
        coordinated_election=args.coordinated_election,
        election_window=args.election_window,
    )
    async with emulator as emu:
        path: Path = args.kubeconfig
        await asyncio.to_thread(_write_private, path, kubeconfig(emu.url, args.namespace))
        print(f"aioleader emulator listening on {emu.url} (kubeconfig: {path})", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.coordinated_election and args.no_lease_candidates:
        parser.error("--coordinated-election needs LeaseCandidates (drop --no-lease-candidates)")
    if args.election_window <= 0:
        parser.error("--election-window must be positive")
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"aioleader emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
