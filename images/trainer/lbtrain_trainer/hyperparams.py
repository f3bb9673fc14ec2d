"""Hyperparameters: template defaults, overridden by the model run's config in Labelbox.

The TrainingTemplate supplies defaults through ``LBTRAIN_HYPERPARAMETERS``; the Labelbox user
can override any of them in the model run's config (``model_run.get_config()``). The merged,
validated set is resolved once, by the export stage (which talks to Labelbox anyway), and
saved in the workspace, so later stages and every torchrun rank read the same values without
calling Labelbox. A value of the wrong type in the user's config is bad input (exit 65): the
user has to fix it, and retrying cannot.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from lbtrain_trainer.errors import BadInputError

ModelSize = Literal["small", "production"]
# The key under which the train stage writes its results into the model run config; it is
# never read back as a hyperparameter.
RESULTS_KEY = "lbtrain_results"


@dataclass(frozen=True)
class Hyperparameters:
    model_size: ModelSize = "production"
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 3e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    seed: int = 0
    # Which Labelbox feature to learn when the labels hold several (classification question or
    # object/entity name filter); empty: the most frequent classification / every object.
    feature_name: str = ""
    # Media and inputs.
    image_size: int = 224  # classification input side; detection: longest side
    max_image_side: int = 1024  # export pre-shrinks downloads to this longest side
    max_length: int = 128  # text tokens
    vocab_size: int = 2000  # small text models: WordPiece vocabulary trained on the data
    # Data checks and splits (for rows the model run left unassigned).
    min_examples_per_class: int = 2
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    # The headline metric on the validation split every N epochs and after the last, on rank 0
    # (live progress and the loss history show it); 0: only the final evaluation.
    validate_every_epochs: int = 1
    skip_broken_media: bool = False
    # Write the splits lbtrain hash-assigned (rows Labelbox left unassigned) back to the model
    # run (assign_data_rows_to_split), so Labelbox's split filters show what was trained on.
    write_back_splits: bool = False
    # Inference.
    score_threshold: float = 0.3  # detections kept for upload
    multi_label_threshold: float = 0.5  # starting point; tuned per class on validation
    # Upload: "all" predicts every row of the run (users filter by split in Labelbox to find
    # label errors in the training data); "test": the evaluation split only.
    predict_splits: str = "all"
    # The run fails when Labelbox accepts less than this share of the uploaded rows (0: only
    # when it accepts none); rejected rows are logged and counted in the run's metadata.
    min_accepted_fraction: float = 0.0
    # Fast paths (used on CUDA only, except compile which the user opts into).
    bf16: bool = True
    compile: bool = False
    num_workers: int = 2
    # CPU threads for torch; 0: the container's CPU quota (cgroup), else the visible cores.
    cpu_threads: int = 0
    # Export: media download threads, and keep-alive connections per host (one per thread).
    download_concurrency: int = 16
    # Export: processes the image downloads run in, sharing those threads; 0: one per CPU of the
    # container's quota (at most 8, each with at least 4 threads); 1: the stage's own threads.
    download_processes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SMALL_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 4,
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "image_size": 64,
    "max_image_side": 128,
    "max_length": 48,
    "vocab_size": 400,
    "num_workers": 0,
    "download_concurrency": 4,
}
# A BERT-base step on a GPU is bound by the host (Python and kernel launches) at 32 rows of 128
# tokens (bench/README.md, "## trainer"), so 16 rows would take about as long: 32 rows (BERT
# fine-tuning's usual batch) spread that fixed cost per step over twice the rows.
TEXT_PRODUCTION_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-5,
    "weight_decay": 0.01,
    "batch_size": 32,
}
# The production defaults of the model types that use them (lbtrain_trainer.modeltypes): text
# types and NER take TEXT_PRODUCTION_DEFAULTS, detection DETECTION_PRODUCTION_DEFAULTS.
# Detection: image_size is the shorter side the detector resizes to (torchvision's default).
DETECTION_PRODUCTION_DEFAULTS: dict[str, Any] = {
    "image_size": 800,
    "max_image_side": 1333,
    "learning_rate": 1e-4,
    "batch_size": 4,
}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if name == "model_size":
        if value not in ("small", "production"):
            raise BadInputError(
                f"hyperparameter model_size must be 'small' or 'production', not {value!r}"
            )
        return value
    if kind == "str":
        if isinstance(value, str):
            return value
    elif kind is bool or kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int or kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float or kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    raise BadInputError(f"hyperparameter {name} must be a {kind}, not {value!r}")


def _check_ranges(hp: Hyperparameters) -> None:
    positive = (
        "epochs",
        "batch_size",
        "image_size",
        "max_image_side",
        "max_length",
        "vocab_size",
        "min_examples_per_class",
        "download_concurrency",
    )
    for name in positive:
        if getattr(hp, name) < 1:
            raise BadInputError(f"hyperparameter {name} must be at least 1")
    if hp.learning_rate <= 0:
        raise BadInputError("hyperparameter learning_rate must be positive")
    if not 0 <= hp.validation_fraction + hp.test_fraction < 1:
        raise BadInputError("validation_fraction + test_fraction must be in [0, 1)")
    if hp.predict_splits not in ("all", "test"):
        raise BadInputError(
            f"hyperparameter predict_splits must be 'all' or 'test', not {hp.predict_splits!r}"
        )
    for name in (
        "score_threshold",
        "multi_label_threshold",
        "warmup_fraction",
        "min_accepted_fraction",
    ):
        if not 0 <= getattr(hp, name) <= 1:
            raise BadInputError(f"hyperparameter {name} must be in [0, 1]")
    for name in ("num_workers", "cpu_threads", "validate_every_epochs", "download_processes"):
        if getattr(hp, name) < 0:
            raise BadInputError(f"hyperparameter {name} must be >= 0")


def resolve_hyperparameters(
    model_type: str,
    template: Mapping[str, Any],
    labelbox_config: Mapping[str, Any] | None = None,
) -> tuple[Hyperparameters, list[str]]:
    """Merge template defaults and the model run config; return the values and ignored keys.

    Precedence, lowest first: built-in defaults, the size-specific defaults (so that
    ``model_size: small`` alone gives a CPU-sized run; production ones are the model type's
    ``production_defaults``), the template, the model run config.
    """
    merged: dict[str, Any] = {
        **template,
        **{k: v for k, v in (labelbox_config or {}).items() if k != RESULTS_KEY},
    }
    from lbtrain_trainer.modeltypes import registry  # imports this module

    kind = registry.get(model_type)  # an unknown type fails here too, whatever the size
    size = _coerce("model_size", str, merged.get("model_size", "production"))
    base: dict[str, Any] = dict(SMALL_DEFAULTS if size == "small" else kind.production_defaults)
    known = {f.name: f.type for f in fields(Hyperparameters)}
    ignored = sorted(k for k in merged if k not in known)
    values = {**base, **{k: v for k, v in merged.items() if k in known}}
    coerced = {k: _coerce(k, known[k], v) for k, v in values.items()}
    hp = Hyperparameters(**coerced)
    _check_ranges(hp)
    return hp, ignored


def save(hp: Hyperparameters, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hp.to_dict(), indent=2, sort_keys=True))


def load(path: Path) -> Hyperparameters:
    data = json.loads(path.read_text())
    known = {f.name for f in fields(Hyperparameters)}
    return Hyperparameters(**{k: v for k, v in data.items() if k in known})
