"""The trainer's settings: the environment contract, each variable also settable by a flag.

The operator sets environment variables (names in :mod:`lbtrain.contract`); a person at a
laptop passes flags. Both land in one frozen :class:`Settings`, so the stages never read the
environment themselves and tests can build settings directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbtrain import contract, destination
from lbtrain_trainer.errors import ConfigError, DestinationEscapesError

_TRUE = {"1", "true", "yes", "on"}


def normalize_model_type(value: str) -> str:
    """Map a Labelbox model type name to a registered type's (:mod:`lbtrain_trainer.modeltypes`:
    ``lbtrain.contract.MODEL_TYPES`` and the installed plugins').

    Names round-trip byte for byte between Labelbox and the TrainingTemplates, and the seed list
    spells one of them with a capital first letter; the trainer itself only cares about the
    kind of model, so it compares case-insensitively. An unknown name raises
    :class:`~lbtrain_trainer.errors.UnknownModelTypeError` (exit 65) naming the known ones.
    """
    from lbtrain_trainer.modeltypes import registry

    return registry.get(value).name


def parse_bool(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def parse_hyperparameters(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{contract.ENV_HYPERPARAMETERS} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{contract.ENV_HYPERPARAMETERS} must be a JSON object")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a stage needs to know about where it runs and what it trains."""

    model_run_id: str
    model_type: str
    workspace: Path
    model_id: str = ""
    organization_id: str = ""
    api_key: str = field(default="", repr=False)
    endpoint: str = contract.DEFAULT_LABELBOX_ENDPOINT
    rest_endpoint: str = contract.DEFAULT_LABELBOX_REST_ENDPOINT
    artifacts: str = ""
    artifacts_root: str = ""  # set by the operator: `artifacts` must lie under it
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    termination_message_path: Path | None = None
    pretrained: Path | None = None
    allow_hub_download: bool = False
    allow_loopback_media: bool = False  # fetch media from 127.0.0.1 (tests, demo)
    # A run of several pods (:mod:`lbtrain_trainer.shared_prepare`): its pod count, this pod's
    # completion index (Kubernetes sets it in an Indexed Job) and the ModelRun's uid.
    num_nodes: int = 1
    completion_index: int | None = None
    run_uid: str = ""

    @property
    def artifact_destination(self) -> str:
        """Where weights and checkpoints go; defaults to ``<workspace>/artifacts``."""
        return self.artifacts or str(self.workspace / "artifacts")

    def require_labelbox(self) -> None:
        if not self.api_key:
            raise ConfigError(f"no Labelbox API key: set {contract.ENV_LABELBOX_API_KEY}")


# Flag name (argparse dest) -> environment variable, for every setting.
FLAG_ENV: dict[str, str] = {
    "model_run_id": contract.ENV_MODEL_RUN_ID,
    "model_type": contract.ENV_MODEL_TYPE,
    "model_id": contract.ENV_MODEL_ID,
    "organization_id": contract.ENV_ORGANIZATION_ID,
    "api_key": contract.ENV_LABELBOX_API_KEY,
    "endpoint": contract.ENV_LABELBOX_ENDPOINT,
    "rest_endpoint": contract.ENV_LABELBOX_REST_ENDPOINT,
    "workspace": contract.ENV_WORKSPACE,
    "artifacts": contract.ENV_ARTIFACTS,
    "artifacts_root": contract.ENV_ARTIFACTS_ROOT,
    "hyperparameters": contract.ENV_HYPERPARAMETERS,
    "termination_message_path": contract.ENV_TERMINATION_MESSAGE_PATH,
    "pretrained": contract.ENV_PRETRAINED,
    "allow_hub_download": contract.ENV_ALLOW_HUB_DOWNLOAD,
    "allow_loopback_media": contract.ENV_ALLOW_LOOPBACK_MEDIA,
    "num_nodes": contract.ENV_NUM_NODES,
    "completion_index": contract.COMPLETION_INDEX_ENV,
    "run_uid": contract.ENV_RUN_UID,
}


def parse_count(name: str, value: str | None, default: int | None) -> int | None:
    """A whole number >= 0 from the environment, else ``default``; anything else is refused."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}")
    return number


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from flags (which win) and the environment."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = flags.get(name)
        if value is None:
            value = env.get(FLAG_ENV[name])
        return value if value not in (None, "") else None

    run_id = get("model_run_id")
    model_type = get("model_type")
    missing = [
        FLAG_ENV[n] for n, v in (("model_run_id", run_id), ("model_type", model_type)) if not v
    ]
    if missing or run_id is None or model_type is None:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}")
    artifacts, artifacts_root = get("artifacts") or "", get("artifacts_root") or ""
    if artifacts_root:  # checked before any stage runs, so nothing is written anywhere
        try:
            destination.check_confined(artifacts, artifacts_root)
        except destination.DestinationEscapes as exc:
            raise DestinationEscapesError(str(exc)) from None
    term = get("termination_message_path")
    pretrained = get("pretrained")
    return Settings(
        model_run_id=run_id,
        model_type=normalize_model_type(model_type),
        workspace=Path(get("workspace") or contract.DEFAULT_WORKSPACE),
        model_id=get("model_id") or "",
        organization_id=get("organization_id") or "",
        api_key=get("api_key") or "",
        endpoint=get("endpoint") or contract.DEFAULT_LABELBOX_ENDPOINT,
        rest_endpoint=get("rest_endpoint") or contract.DEFAULT_LABELBOX_REST_ENDPOINT,
        artifacts=artifacts,
        artifacts_root=artifacts_root,
        hyperparameters=parse_hyperparameters(get("hyperparameters")),
        termination_message_path=Path(term) if term else None,
        pretrained=Path(pretrained) if pretrained else None,
        allow_hub_download=parse_bool(get("allow_hub_download")),
        allow_loopback_media=parse_bool(get("allow_loopback_media")),
        num_nodes=parse_count(FLAG_ENV["num_nodes"], get("num_nodes"), 1) or 1,
        completion_index=parse_count(FLAG_ENV["completion_index"], get("completion_index"), None),
        run_uid=get("run_uid") or "",
    )
