"""What the trainer bench measures on: the cases per model type, randomly initialised production
weights in the `LBTRAIN_PRETRAINED` layout, synthetic rows through the trainer's own export
media step and prepare stage, and the environment line every result carries.

Throughput does not depend on the weights' values, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.machine import revision, utc_now

FILLER = [
    "the",
    "report",
    "was",
    "shared",
    "with",
    "the",
    "whole",
    "group",
    "and",
    "everyone",
    "read",
    "it",
    "carefully",
    "before",
    "the",
    "meeting",
    "started",
    "in",
    "the",
    "late",
    "afternoon",
]


@dataclass(frozen=True)
class Case:
    """How one model type is benchmarked."""

    rows: int
    batch_size: int
    epochs: int
    ceiling_steps: int
    warmup_steps: int
    num_workers: int
    source_px: int = 0  # synthetic image side (image types)
    hp: dict[str, Any] = field(default_factory=dict)


GPU_CASES = {
    "image_single_classification": Case(2560, 128, 3, 30, 5, 12, 256, {"image_size": 224}),
    "image_multi_classification": Case(2560, 128, 3, 30, 5, 12, 256, {"image_size": 224}),
    "text_single_classification": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "text_multi_classification": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "ner": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "bounding_box": Case(160, 8, 3, 10, 3, 12, 800, {"image_size": 800, "max_image_side": 1333}),
}
TINY_CASES = {
    "image_single_classification": Case(24, 4, 2, 3, 1, 2, 80, {"image_size": 64}),
    "image_multi_classification": Case(24, 4, 2, 3, 1, 2, 80, {"image_size": 64}),
    "text_single_classification": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    "text_multi_classification": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    "ner": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    # Faster R-CNN v2's box head costs about the same per sampled RoI at any image size (tens
    # of seconds a step on one CPU core): one step per epoch.
    "bounding_box": Case(
        2, 2, 2, 1, 0, 0, 96, {"image_size": 96, "max_image_side": 96, "min_examples_per_class": 1}
    ),
}


def sig(value: float) -> float:
    """Four significant figures (the tiny CPU run's rates are well below 1)."""
    return float(f"{value:.4g}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- pretrained weights (random) in the LBTRAIN_PRETRAINED layout -------------------------------


def make_pretrained(root: Path, types: list[str], texts: list[str], tiny: bool) -> None:
    import torch

    from lbtrain_trainer.models.pretrained import CONVNEXT_FILE, DETECTOR_FILE, TEXT_DIR
    from lbtrain_trainer.modeltypes import registry

    # The weight layouts the types ask for (each type names its own), not their names.
    needed = {layout for t in types for layout in registry.get(t).pretrained}
    root.mkdir(parents=True, exist_ok=True)
    if CONVNEXT_FILE in needed:
        from torchvision.models import convnext_tiny

        torch.save(convnext_tiny(weights=None).state_dict(), root / CONVNEXT_FILE)
    if DETECTOR_FILE in needed:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        detector = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
        torch.save(detector.state_dict(), root / DETECTOR_FILE)
    if TEXT_DIR in needed:
        from lbtrain_trainer.synthetic import save_random_text_encoder

        if tiny:
            save_random_text_encoder(
                root / TEXT_DIR,
                texts,
                2000,
                min_model_vocab=1000,
                hidden_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=256,
            )
        else:  # bert-base-uncased's shape
            save_random_text_encoder(root / TEXT_DIR, texts, 2000, min_model_vocab=30522)


# --- synthetic data through the trainer's export media step and prepare stage -------------------


def lengthen(text: str, words: int) -> str:
    """Append neutral filler (after any entity, so NER offsets stay valid)."""
    extra = [FILLER[i % len(FILLER)] for i in range(max(0, words - len(text.split())))]
    return f"{text} {' '.join(extra)}".strip()


def synthetic_rows(model_type: str, case: Case, text_words: int) -> list[dict[str, Any]]:
    from lbtrain_trainer import synthetic

    data = synthetic.make_dataset(
        model_type,
        case.rows,
        model_run_id="mr-bench",
        image_size=case.source_px or 64,
        assign_splits=False,  # with validation/test fractions 0: every row trains
    )
    rows = data.rows
    if not case.source_px:
        for row in rows:
            row["data_row"]["row_data"] = lengthen(row["data_row"]["row_data"], text_words)
    return rows


def prepare_workspace(
    model_type: str, case: Case, ws: Path, pretrained: Path, device: str, text_words: int
) -> tuple[Any, Any]:
    """Export rows -> media -> prepared manifest, as the export and prepare stages write them."""
    from lbtrain_trainer import export, hyperparams, prepare
    from lbtrain_trainer.settings import Settings

    rows = synthetic_rows(model_type, case, text_words)
    ws.mkdir(parents=True)
    (ws / "export.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = {
        "model_size": "production",
        "epochs": case.epochs,
        "batch_size": case.batch_size,
        "num_workers": case.num_workers,
        "validation_fraction": 0.0,
        "test_fraction": 0.0,
        **case.hp,
    }
    if device == "cpu":
        template["cpu_threads"] = max(1, (os.cpu_count() or 2) // 2)
    settings = Settings(
        model_run_id="mr-bench",
        model_type=model_type,
        workspace=ws,
        model_id="model-1",
        hyperparameters=template,
        pretrained=pretrained,
        artifacts=str(ws / "artifacts"),
    )
    hp, _ = hyperparams.resolve_hyperparameters(model_type, template, {})
    hyperparams.save(hp, ws / "hyperparameters.json")
    export.fetch_media(settings, hp)
    prepare.run_prepare(settings)
    return settings, hp


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": device,
        "date": utc_now(),
        "commit": revision(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        import torchvision
        import transformers

        info["torchvision"] = torchvision.__version__
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def batch_to_device(batch: Any, device: Any) -> Any:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: batch_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [batch_to_device(v, device) for v in batch]
    if isinstance(batch, tuple):
        return tuple(batch_to_device(v, device) for v in batch)
    return batch


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
