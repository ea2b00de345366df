"""What the emulator serves over and whom it lets in: HTTPS with a generated CA, bearer tokens,
client certificates.

kube-apiserver authenticates every request before anything else: a client certificate signed by
the cluster's client CA, or a bearer token; with neither (or a token it does not know) it answers
``401 Unauthorized`` with a ``Status``. [`ServerAuth`][ServerAuth] does the same for the emulator, for
tests that a client keeps the user's TLS and credentials: the CA, the server certificate (for
``127.0.0.1``, ``localhost`` and ``::1``) and client certificates are generated with ``trustme``
(the ``testing`` extra) into a private temporary directory, removed when the emulator stops.

Tokens can be rotated ([`ServerAuth.set_tokens()`][ServerAuth.set_tokens]): the new ones are accepted and the old
ones refused from then on, as a cluster refuses an expired projected token.
"""

from __future__ import annotations

import base64
import hmac
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, final

from aiohttp import web

__all__ = ["UNAUTHORIZED", "ClientCertificate", "ServerAuth"]

#: kube-apiserver's reply to a request it cannot authenticate.
UNAUTHORIZED: dict[str, Any] = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


@final
class ClientCertificate:
    """A client certificate (and its key) issued by the emulator's CA, as files."""

    def __init__(self, name: str, cert_file: Path, key_file: Path) -> None:
        self.name = name
        self.cert_file = cert_file
        self.key_file = key_file

    def __repr__(self) -> str:
        return f"<ClientCertificate {self.name!r} {self.cert_file}>"


@final
class ServerAuth:
    """TLS material and the credentials the emulator accepts (see the module docstring)."""

    def __init__(self, *, tls: bool, tokens: Iterable[str], client_ca: bool) -> None:
        self._tokens = _checked(tokens)
        if client_ca and not tls:
            raise ValueError("client_ca=True needs tls=True (client certificates are TLS)")
        self.tls = tls
        self.client_ca = client_ca
        self._dir: Path | None = None
        self._ca: Any = None
        self._server_context: ssl.SSLContext | None = None
        self._certificates: dict[str, ClientCertificate] = {}
        if tls:
            try:
                import trustme
            except ImportError as exc:  # pragma: no cover - the testing extra brings it
                raise RuntimeError(
                    "KubeEmulator(tls=True) needs the trustme package (pip install "
                    "'aioleader[testing]')"
                ) from exc
            self._dir = Path(tempfile.mkdtemp(prefix="aioleader-emulator-"))
            self._ca = trustme.CA(organization_name="aioleader emulator")
            self._ca.cert_pem.write_to_path(str(self._dir / "ca.crt"))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(context)
            if client_ca:
                # Asked for, not required: a client with a token but no certificate must get
                # a 401 from the handler, as from kube-apiserver, not a failed handshake.
                context.verify_mode = ssl.CERT_OPTIONAL
                self._ca.configure_trust(context)
            self._server_context = context

    @property
    def checks(self) -> bool:
        """Whether requests must authenticate at all."""
        return bool(self._tokens) or self.client_ca

    @property
    def tokens(self) -> frozenset[str]:
        """The bearer tokens accepted now."""
        return frozenset(self._tokens)

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """Accept exactly ``tokens`` from now on (the others are refused with 401)."""
        self._tokens = _checked(tokens)

    @property
    def server_context(self) -> ssl.SSLContext | None:
        """The server side's SSL context; ``None`` for plain HTTP."""
        return self._server_context

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that signs the server's and the clients' certificates."""
        if self._dir is None:
            raise RuntimeError("the emulator serves plain HTTP (KubeEmulator(tls=True) has a CA)")
        return self._dir / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    def client_certificate(self, name: str) -> ClientCertificate:
        """A client certificate for ``name`` (its common name), issued once, as files."""
        if not self.client_ca or self._dir is None:
            raise RuntimeError(
                "the emulator does not check client certificates (KubeEmulator(tls=True, "
                "client_ca=True))"
            )
        found = self._certificates.get(name)
        if found is None:
            leaf = self._ca.issue_cert(f"{_safe(name)}.clients.emulator", common_name=name)
            stem = f"client-{len(self._certificates)}"
            cert_file, key_file = self._dir / f"{stem}.crt", self._dir / f"{stem}.key"
            with cert_file.open("wb") as out:
                for blob in leaf.cert_chain_pems:
                    out.write(blob.bytes())
            leaf.private_key_pem.write_to_path(str(key_file))
            key_file.chmod(0o600)
            found = self._certificates[name] = ClientCertificate(name, cert_file, key_file)
        return found

    def admits(self, request: web.BaseRequest) -> bool:
        """Whether ``request`` authenticates: a verified client certificate (when checked) or
        an accepted bearer token. Everyone is admitted when nothing is checked."""
        if not self.checks:
            return True
        # With CERT_OPTIONAL, a certificate that does not verify fails the handshake: one that
        # is here was signed by our CA.
        transport = request.transport
        if self.client_ca and transport is not None and transport.get_extra_info("peercert"):
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        token = token.strip()
        return any(hmac.compare_digest(token, accepted) for accepted in self._tokens)

    def kubeconfig_user(self, name: str, auth: str) -> dict[str, Any]:
        """The kubeconfig ``user`` entry for client ``name`` with ``auth`` (see
        [`KubeEmulator.kubeconfig()`][KubeEmulator.kubeconfig])."""
        if auth == "token":
            return {"token": self._one_token()}
        if auth == "certificate":
            cert = self.client_certificate(name)
            return {
                "client-certificate-data": _b64(cert.cert_file.read_bytes()),
                "client-key-data": _b64(cert.key_file.read_bytes()),
            }
        if auth == "none":
            return {}
        raise ValueError(f"auth must be 'auto', 'token', 'certificate' or 'none', not {auth!r}")

    def _one_token(self) -> str:
        if not self._tokens:
            raise RuntimeError("the emulator checks no tokens (KubeEmulator(token=...))")
        return sorted(self._tokens)[0]

    def resolve(self, auth: str) -> str:
        """``auth`` with ``"auto"`` made concrete: a token if tokens are checked, else a
        certificate if certificates are, else none."""
        if auth != "auto":
            return auth
        if self._tokens:
            return "token"
        if self.client_ca:
            return "certificate"
        return "none"

    def close(self) -> None:
        """Remove the generated files."""
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _checked(tokens: Iterable[str]) -> set[str]:
    found = set()
    for token in tokens:
        if not isinstance(token, str) or not token or token != token.strip():
            raise ValueError(f"a token must be a non-empty string without spaces: {token!r}")
        found.add(token)
    return found


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()) or "client"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
