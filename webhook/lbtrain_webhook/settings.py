"""The webhook's settings: one frozen object built from flags and environment, checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8080
DEFAULT_METRICS_PORT = 9090
DEFAULT_MAX_BODY_BYTES = 64 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Environment variables, one per flag (the flag wins when both are given).
ENV_SECRET = "LBTRAIN_WEBHOOK_SECRET"
ENV_SECRET_FILE = "LBTRAIN_WEBHOOK_SECRET_FILE"
ENV_NAMESPACE = "LBTRAIN_WEBHOOK_NAMESPACE"
ENV_HOST = "LBTRAIN_WEBHOOK_HOST"
ENV_PORT = "LBTRAIN_WEBHOOK_PORT"
ENV_METRICS_PORT = "LBTRAIN_WEBHOOK_METRICS_PORT"
ENV_MAX_BODY_BYTES = "LBTRAIN_WEBHOOK_MAX_BODY_BYTES"
ENV_TLS_CERT = "LBTRAIN_WEBHOOK_TLS_CERT"
ENV_TLS_KEY = "LBTRAIN_WEBHOOK_TLS_KEY"
ENV_LOG_LEVEL = "LBTRAIN_WEBHOOK_LOG_LEVEL"
ENV_SHUTDOWN_TIMEOUT = "LBTRAIN_WEBHOOK_SHUTDOWN_TIMEOUT"


class SettingsError(ValueError):
    """The settings cannot work together; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """Everything the webhook needs to run. Secrets given inline never show in `repr`."""

    namespace: str | None = None  # None: the kubeconfig's (or the pod's) namespace
    kubeconfig: str | None = None  # None: $KUBECONFIG, in-cluster, ~/.kube/config
    host: str = "0.0.0.0"  # noqa: S104 - a webhook in a pod listens on every interface
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no metrics listener
    secret_files: tuple[Path, ...] = ()
    inline_secrets: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "INFO"
    shutdown_timeout: float = 30.0
    secret_poll_interval: float = 1.0
    watch_timeout_seconds: int = 240
    api_timeout: float = 10.0

    def check(self) -> None:
        """Raise SettingsError naming the first setting that cannot work."""
        if not self.secret_files and not self.inline_secrets:
            raise SettingsError(
                f"no webhook secret: pass --secret-file PATH or set {ENV_SECRET} "
                "(the secret entered in Labelbox under Models > Settings > Model training)"
            )
        for name, port in (("--port", self.port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name} must be between 0 and 65535, got {port}")
        if self.metrics_port and self.metrics_port == self.port:
            raise SettingsError("--metrics-port must differ from --port")
        if self.max_body_bytes < 1024:
            raise SettingsError(
                f"--max-body-bytes must be at least 1024, got {self.max_body_bytes}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.shutdown_timeout < 0 or self.secret_poll_interval <= 0:
            raise SettingsError("timeouts and intervals must be positive")


def split_secrets(text: str) -> tuple[str, ...]:
    """Secrets held one per line (a file or an environment variable), blank lines skipped."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        value = line.strip()
        if value:
            seen.setdefault(value, None)
    return tuple(seen)


def env_secret_files(env: Mapping[str, str]) -> tuple[Path, ...]:
    """`LBTRAIN_WEBHOOK_SECRET_FILE` may list several files, separated by commas."""
    raw = env.get(ENV_SECRET_FILE, "")
    return tuple(Path(p.strip()) for p in raw.split(",") if p.strip())
