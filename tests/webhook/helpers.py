"""Helpers shared by the webhook tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

import json
from typing import Any

from lbtrain_webhook.signature import sign

# Distinctive, so a leak into a reply or a log line cannot hide.
SECRET = "wh-secret-7f3a9c1e-DO-NOT-LEAK"
SEED_TYPES = {
    "Text_multi_classification": "Text checklist classification (BERT)",
    "bounding_box": "Object detection",
    "ner": "Named entities",
}


def template_body(
    model_type: str, description: str = "", name: str | None = None
) -> dict[str, Any]:
    name = name or model_type.lower().replace("_", "-")
    return {
        "metadata": {"name": name},
        "spec": {
            "modelType": model_type,
            "description": description,
            "image": "127.0.0.1:1/lbtrain-trainer:test",
            "env": [{"name": "SOME_TOKEN", "value": "never-shown-in-models"}],
        },
    }


def signed_headers(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {
        "X-Hub-Signature": sign(secret.encode(), body),
        "Content-Type": "application/json",
        **extra,
    }


def run_body(model_run_id: str, model_type: str = "ner", **extra: Any) -> bytes:
    return json.dumps({"modelRunId": model_run_id, "modelType": model_type, **extra}).encode()
