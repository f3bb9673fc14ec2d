"""Where the API server is and how to authenticate: from a kubeconfig or from inside a pod.

Supports what lbtrain's users and tests need: bearer tokens (static, or a mounted service-account
token that is re-read on every request so rotation needs no restart), client certificates (files or
inline data), a CA bundle (file or inline data) and `insecure-skip-tls-verify`. Exec and
auth-provider plugins are refused with a clear message instead of half-working.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The kubeconfig or in-cluster environment cannot be used; the message says why."""


@dataclass(frozen=True)
class KubeConfig:
    """Connection settings for one API server and one identity."""

    server: str
    namespace: str = "default"
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    insecure: bool = False
    # The token file's last (inode, mtime, size) and content: a stat per request, not a read.
    _token_seen: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def bearer_token(self) -> str | None:
        """The current token. A token file is checked on every call and re-read when it changed
        (the kubelet rotates projected tokens by swapping the file), so a rotated token is used
        at once, without a restart and without reading the file for every request."""
        if not self.token_file:
            return self.token
        st = os.stat(self.token_file)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._token_seen.get("key") != key:
            token = Path(self.token_file).read_text().strip()
            self._token_seen.update(key=key, token=token)
        return str(self._token_seen["token"])

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_file or self.ca_data:
            ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.client_cert_data and self.client_key_data:
            _load_client_cert(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl only loads key pairs from files: write them to a private temp dir for the call.
    with tempfile.TemporaryDirectory(prefix="lbtrain-kube-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        ctx.load_cert_chain(str(cert_path), str(key_path))


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(data)
    path = entry.get(key)
    if path:
        return (base / path).read_bytes() if not os.path.isabs(path) else Path(path).read_bytes()
    return None


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> KubeConfig:
    """Read one context of a kubeconfig file (the current one unless `context` names another)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context; pass a context name")

    def pick(section: str, wanted: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if item.get("name") == wanted:
                return dict(item.get(section[:-1]) or {})
        raise ConfigError(f"kubeconfig {path}: {section[:-1]} {wanted!r} not found")

    ctx = pick("contexts", name)
    cluster = pick("clusters", ctx.get("cluster", ""))
    user = pick("users", ctx.get("user", "")) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"kubeconfig {path}: user {ctx.get('user')!r} uses an exec/auth-provider plugin, "
            "which lbtrain does not run; use a token or client certificate"
        )
    base = path.parent
    ca = _data_or_file(cluster, "certificate-authority", base)
    token_file = user.get("tokenFile")
    return KubeConfig(
        server=str(cluster.get("server", "")).rstrip("/"),
        namespace=str(ctx.get("namespace") or "default"),
        token=user.get("token"),
        token_file=str(base / token_file) if token_file else None,
        ca_data=ca.decode() if ca else None,
        client_cert_data=_data_or_file(user, "client-certificate", base),
        client_key_data=_data_or_file(user, "client-key", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def load_incluster(sa_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeConfig:
    """The pod's own service account, as every in-cluster client reads it."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port:
        raise ConfigError("not running in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    host = f"[{host}]" if ":" in host else host
    ns_file = sa_dir / "namespace"
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
        token_file=str(sa_dir / "token"),
        ca_file=str(sa_dir / "ca.crt"),
    )


def load_config(kubeconfig: str | None = None, context: str | None = None) -> KubeConfig:
    """An explicit kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""
    explicit = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if explicit:
        return load_kubeconfig(explicit, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return load_incluster()
    home = Path.home() / ".kube" / "config"
    if home.exists():
        return load_kubeconfig(home, context)
    raise ConfigError(
        "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a pod"
    )
