"""Building an ``ApiClient`` when a lock is given none: in-cluster, else the kubeconfig.

Failing here is fatal ([`ElectionError`][aioleader.ElectionError]): no retry finds a configuration that is
not there. The environment is read at each call, not at import time.
"""

from __future__ import annotations

import os
from typing import Any

import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from .._exceptions import ClusterConfigError

__all__ = ["load_api_client"]


def _config_source() -> tuple[str | None, str]:
    """``(kubeconfig path or None for in-cluster, description)``, from the environment now:
    kubernetes_asyncio's own default path reads ``$KUBECONFIG`` once, at import time."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None, "the in-cluster service account (KUBERNETES_SERVICE_HOST is set)"
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return path, f"the kubeconfig {path!r}"


def _missing_kubeconfig(path: str) -> bool:
    """Whether none of the files of a ``KUBECONFIG``-style path list exists."""
    return not any(os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep) if p)


def _problem(exc: BaseException) -> str:
    """What is wrong with a configuration, in one line (YAML errors span several)."""
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if type(exc).__module__.split(".")[0] == "yaml":
        return "not valid YAML: " + " ".join(str(exc).split())
    if isinstance(exc, ConfigException):
        return "not a usable kubeconfig: " + " ".join(str(exc).split())
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _empty(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return not f.read(1 << 16).strip()
    except OSError:
        return False  # the loader reports it


async def load_api_client() -> Any:
    """An ``ApiClient`` for the in-cluster service account if ``KUBERNETES_SERVICE_HOST`` is set,
    else for ``$KUBECONFIG`` (or ``~/.kube/config``). A fresh ``Configuration``: the process-wide
    default that kubernetes_asyncio's loaders would otherwise set is left alone.

    Raises [`ClusterConfigError`][aioleader.ClusterConfigError] (fatal) if there is no usable configuration.
    """
    configuration = Configuration()
    config_file, source = _config_source()
    if config_file is not None and _missing_kubeconfig(config_file):
        await anyio.lowlevel.checkpoint()
        raise ClusterConfigError(
            f"cannot configure a Kubernetes client: there is no kubeconfig at {config_file!r} "
            "(set KUBECONFIG, run in a pod, or pass api_client=)",
            source=config_file,
            problem="no such file",
        )
    try:
        if config_file is None:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            if os.pathsep not in config_file and _empty(config_file):
                raise ConfigException("the file is empty")
            # persist_config=False: never rewrite the user's kubeconfig behind their back.
            await load_kube_config(
                config_file=config_file,
                client_configuration=configuration,
                persist_config=False,
            )
    except Exception as exc:  # ConfigException, OSError, YAML errors, a failing exec plugin, ...
        problem = _problem(exc)
        raise ClusterConfigError(
            f"cannot configure a Kubernetes client from {source}: {problem} "
            "(pass api_client= to use a client configured elsewhere)",
            source=config_file,
            problem=problem,
        ) from exc
    return ApiClient(configuration=configuration)
