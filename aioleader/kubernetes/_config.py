"""Building an ``ApiClient`` when a lock is given none: in-cluster, else the kubeconfig.

Failing here is fatal ([`ElectionError`][aioleader.ElectionError]): no retry finds a configuration that is
not there. The environment is read at each call, not at import time.

**Credentials that expire.** ``load_incluster_config`` installs a hook that re-reads the projected
service-account token; ``load_kube_config`` installs none: it runs an ``exec`` plugin (EKS, GKE,
AKS logins) or refreshes an OIDC token once, and a client built from it sends the same token
until the server refuses it (401) for good, typically 15 minutes to an hour after the start.
A client built here from a kubeconfig gets [`KubeconfigCredentials`][KubeconfigCredentials] as its
``refresh_api_key_hook``: before a request, at most every [`REFRESH_INTERVAL`][REFRESH_INTERVAL]
seconds, it asks kubernetes_asyncio's loader to load the credentials again, which re-runs the
plugin once its token is within five minutes of its ``expirationTimestamp`` (and is a no-op
before). The request path bounds the hook by the request's timeout (a hung plugin is a failed
request, retried). A client certificate that a plugin renews is not picked up: the lease pool's
TLS context is built once.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from .._exceptions import ClusterConfigError

__all__ = ["REFRESH_INTERVAL", "KubeconfigCredentials", "load_api_client"]

#: Seconds between two reloads of a kubeconfig's credentials (each is cheap until the token is
#: near its expiry; kubernetes_asyncio refreshes five minutes ahead of it).
REFRESH_INTERVAL: Final = 1.0


class KubeconfigCredentials:
    """A ``refresh_api_key_hook`` that reloads a kubeconfig's credentials (see the module
    docstring) through the loader ``load_kube_config`` returned."""

    def __init__(self, loader: Any, *, interval: float | None = None) -> None:
        self._loader = loader
        self._interval = REFRESH_INTERVAL if interval is None else interval
        self._next = time.monotonic() + self._interval

    async def __call__(self, configuration: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        await self._loader.load_and_set(configuration)


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
            loader = await load_kube_config(
                config_file=config_file,
                client_configuration=configuration,
                persist_config=False,
            )
            configuration.refresh_api_key_hook = KubeconfigCredentials(loader)
    except Exception as exc:  # ConfigException, OSError, YAML errors, a failing exec plugin, ...
        problem = _problem(exc)
        raise ClusterConfigError(
            f"cannot configure a Kubernetes client from {source}: {problem} "
            "(pass api_client= to use a client configured elsewhere)",
            source=config_file,
            problem=problem,
        ) from exc
    return ApiClient(configuration=configuration)
