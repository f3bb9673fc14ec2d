"""`helm test`: call the webhook as Labelbox does, through its Service, and say what went wrong.

Run by the chart's test Pod (templates/tests/test-models.yaml) with the webhook's own image, so
it uses Python's standard library only. It sends `GET /models` twice:

1. unsigned: the webhook must refuse it (401), or anyone who reaches it could use it;
2. signed with the shared secret (`X-Hub-Signature: sha1=<hex HMAC-SHA1(secret, raw body)>`, the
   body of a GET being empty): the webhook must answer 200 with at least one model type, which
   is exactly what Labelbox's Train Model dropdown shows.

Environment: LBTRAIN_WEBHOOK_URL (http:// or https://, no trailing path), LBTRAIN_SECRET_FILE
(the mounted webhook Secret: one secret per line, the first is used), LBTRAIN_TEST_TIMEOUT
(seconds to wait for a webhook that is still starting, default 60). Over HTTPS the certificate
is not verified: this checks the webhook answers, not the certificate Labelbox sees at the
Ingress or load balancer. The secret itself is never printed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request


def first_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except OSError as exc:
        raise SystemExit(
            f"FAIL: cannot read the webhook secret file {path}: {exc.strerror}"
        ) from None
    secrets = [line for line in lines if line]
    if not secrets:
        raise SystemExit(f"FAIL: the webhook secret file {path} is empty")
    return secrets[0]


def get(url: str, headers: dict[str, str], context: ssl.SSLContext | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get_retrying(
    url: str, headers: dict[str, str], context: ssl.SSLContext | None, deadline: float
) -> tuple[int, bytes]:
    """GET, retried while the webhook is unreachable or not synced yet (503) until `deadline`."""
    while True:
        try:
            status, body = get(url, headers, context)
            if status != 503 or time.monotonic() >= deadline:
                return status, body
            problem = f"503 {body[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if time.monotonic() >= deadline:
                raise SystemExit(f"FAIL: cannot reach the webhook at {url}: {reason}") from None
            problem = str(reason)
        print(f"waiting for the webhook at {url}: {problem}", flush=True)
        time.sleep(2)


def main() -> int:
    base = os.environ["LBTRAIN_WEBHOOK_URL"].rstrip("/")
    secret = first_secret(os.environ["LBTRAIN_SECRET_FILE"])
    deadline = time.monotonic() + float(os.environ.get("LBTRAIN_TEST_TIMEOUT", "60"))
    context = None
    if base.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = f"{base}/models"

    status, body = get_retrying(url, {}, context, deadline)
    if status != 401:
        print(f"FAIL: an unsigned GET {url} got {status}, not 401: the webhook must refuse it")
        return 1
    print("ok: an unsigned GET /models is refused (401)")

    signature = "sha1=" + hmac.new(secret.encode(), b"", hashlib.sha1).hexdigest()
    status, body = get_retrying(url, {"X-Hub-Signature": signature}, context, deadline)
    if status == 401:
        print(
            f"FAIL: a GET {url} signed with the secret of LBTRAIN_SECRET_FILE got 401: the webhook"
            " reads another secret (is webhook.secret.existingSecret the Secret it mounts?)"
        )
        return 1
    if status != 200:
        print(f"FAIL: a signed GET {url} got {status}: {body[:500]!r}")
        return 1
    try:
        models = json.loads(body)
    except ValueError:
        print(f"FAIL: a signed GET {url} answered 200 with a body that is not JSON: {body[:200]!r}")
        return 1
    if not isinstance(models, dict) or not models:
        print(
            f"FAIL: GET {url} lists no model type: Labelbox's Train Model dropdown would be empty."
            " Create a TrainingTemplate in the webhook's namespace"
            " (or keep trainingTemplates.enabled=true)."
        )
        return 1
    print(f"ok: a signed GET /models lists {', '.join(sorted(models))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
