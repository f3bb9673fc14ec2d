"""Fixtures for the webhook tests: the real app, wired to the testbed's real API server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lbtrain.kube import TRAININGTEMPLATES, KubeClient
from lbtrain_dev.testbed import ControlPlane
from lbtrain_webhook.app import CACHE, make_app
from lbtrain_webhook.settings import Settings

from .helpers import SECRET, SEED_TYPES, template_body


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook-secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
async def seeded(kube: KubeClient, namespace: str, crds: None) -> str:
    for model_type, description in SEED_TYPES.items():
        await kube.create(TRAININGTEMPLATES, template_body(model_type, description), namespace)
    return namespace


@pytest.fixture
def webhook_settings(control_plane: ControlPlane, seeded: str, secret_file: Path) -> Settings:
    return Settings(
        namespace=seeded,
        kubeconfig=str(control_plane.kubeconfig),
        metrics_port=0,
        secret_files=(secret_file,),
        secret_poll_interval=0.1,
        max_body_bytes=4096,
    )


MakeClient = Callable[..., Any]


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    """Start the real app for `settings` (any make_app keyword too) and wait for its cache."""

    async def make(settings: Settings, *, wait: bool = True, **kwargs: Any) -> TestClient[Any, Any]:
        app = make_app(settings, **kwargs)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        if wait:
            await app[CACHE].wait_synced(15)
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient, webhook_settings: Settings) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await make_client(webhook_settings)
    return result
