"""`lbtrain webhook`: serve the Labelbox model-training webhook (GET /models, POST /model_run)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from lbtrain.kube.config import ConfigError
from lbtrain.logs import configure_logging, get_logger
from lbtrain_webhook import settings as s
from lbtrain_webhook.secret_store import SecretError
from lbtrain_webhook.server import serve
from lbtrain_webhook.settings import Settings, SettingsError, split_secrets
from lbtrain_webhook.tls import TlsError

log = get_logger("lbtrain.webhook.cli")

# uvloop's event loop, transports and TLS are compiled; asyncio's are Python. Per POST the webhook
# reads a request, writes a TLS request to the API server, reads its answer and writes its own:
# on asyncio's loop that I/O was about a fifth of the webhook's CPU (bench/README.md).
run: Callable[[Coroutine[Any, Any, None]], None]
try:
    from uvloop import run
except ImportError:  # no uvloop for this platform (it is a dependency wherever it builds)
    from asyncio import run

DESCRIPTION = """\
Serve the Labelbox model-training webhook.

  GET  /models     signed; the model types of the TrainingTemplates in --namespace
  POST /model_run  signed; creates the ModelRun for the model run (idempotent on modelRunId)
  GET  /healthz    alive;  GET /readyz: template cache synced and Kubernetes API reachable
  GET  /metrics    Prometheus metrics, on --metrics-port

Requests are signed by Labelbox with the secret set under Models > Settings > Model training:
X-Hub-Signature: sha1=<hex HMAC-SHA1(secret, raw body)>.
"""

EPILOG = f"""\
environment (a flag wins over its variable):
  {s.ENV_SECRET}        the secret itself (several: one per line)
  {s.ENV_SECRET_FILE}   secret file(s), comma-separated
  {s.ENV_NAMESPACE}, KUBECONFIG, {s.ENV_HOST}, {s.ENV_PORT},
  {s.ENV_METRICS_PORT}, {s.ENV_MAX_BODY_BYTES}, {s.ENV_TLS_CERT},
  {s.ENV_TLS_KEY}, {s.ENV_LOG_LEVEL}, {s.ENV_SHUTDOWN_TIMEOUT}

secret rotation: put the new secret on its own line in the secret file (or add a second
--secret-file), change it in Labelbox, then remove the old one. Files are re-read within about
a second of changing; no restart.

example:
  lbtrain webhook --namespace lbtrain --secret-file /etc/lbtrain/webhook/secret
"""


def _env_number(
    env: Mapping[str, str], name: str, default: float, kind: type[float] = int
) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtrain webhook",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k8s = p.add_argument_group("Kubernetes")
    k8s.add_argument(
        "--namespace",
        default=env.get(s.ENV_NAMESPACE),
        help="where TrainingTemplates are read and ModelRuns created "
        "(default: the kubeconfig's namespace, or the pod's own)",
    )
    k8s.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG") or None,
        help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)",
    )
    net = p.add_argument_group("listening")
    net.add_argument(
        "--host",
        default=env.get(s.ENV_HOST, Settings.host),
        help="address to bind (default: %(default)s)",
    )
    net.add_argument(
        "--port",
        type=int,
        default=_env_number(env, s.ENV_PORT, s.DEFAULT_PORT),
        help="webhook port (default: %(default)s)",
    )
    net.add_argument(
        "--metrics-port",
        type=int,
        default=_env_number(env, s.ENV_METRICS_PORT, s.DEFAULT_METRICS_PORT),
        help="Prometheus /metrics port; 0 turns it off (default: %(default)s)",
    )
    net.add_argument(
        "--tls-cert",
        type=Path,
        default=env.get(s.ENV_TLS_CERT) or None,
        help="TLS certificate chain (PEM); with --tls-key serves HTTPS",
    )
    net.add_argument(
        "--tls-key", type=Path, default=env.get(s.ENV_TLS_KEY) or None, help="TLS private key (PEM)"
    )
    net.add_argument(
        "--shutdown-timeout",
        type=float,
        default=_env_number(env, s.ENV_SHUTDOWN_TIMEOUT, Settings.shutdown_timeout, float),
        help="seconds to finish in-flight requests on SIGTERM (default: %(default)s)",
    )
    req = p.add_argument_group("requests")
    req.add_argument(
        "--secret-file",
        dest="secret_files",
        action="append",
        type=Path,
        default=None,
        metavar="PATH",
        help="file holding the shared secret(s), one per line; repeatable; re-read on change",
    )
    req.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env_number(env, s.ENV_MAX_BODY_BYTES, s.DEFAULT_MAX_BODY_BYTES),
        help="larger POST bodies are refused with 413 (default: %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default=env.get(s.ENV_LOG_LEVEL, "INFO"),
        type=str.upper,
        choices=s.LOG_LEVELS,
        help="(default: %(default)s)",
    )
    return p


def settings_from(argv: list[str], env: Mapping[str, str]) -> Settings:
    """Parse flags (falling back to `env`); argparse exits with 2 on a bad flag."""
    args = build_parser(env).parse_args(argv)
    files = tuple(args.secret_files) if args.secret_files else s.env_secret_files(env)
    settings = Settings(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        secret_files=files,
        inline_secrets=split_secrets(env.get(s.ENV_SECRET, "")),
        max_body_bytes=args.max_body_bytes,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        log_level=args.log_level,
        shutdown_timeout=args.shutdown_timeout,
    )
    settings.check()
    return settings


def main(argv: list[str]) -> int:
    try:
        settings = settings_from(argv, os.environ)
    except (SettingsError, ValueError) as exc:
        print(f"lbtrain webhook: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        run(serve(settings))
    except (SettingsError, SecretError, TlsError, ConfigError, OSError) as exc:
        log.error("cannot start the webhook", extra={"error": f"{type(exc).__name__}: {exc}"})
        return 2
    except KeyboardInterrupt:
        pass
    return 0
