"""GPU smoke check for the trainer: every model type on CUDA with the fast paths on.

Not a pytest module (CI has no GPU): run it by hand on a GPU machine,
``PYTHONPATH=.:images/trainer python tests/trainer/gpu_smoke.py``. It needs torch,
torchvision, transformers, tokenizers, numpy and pillow, but no Labelbox SDK or server: the
export rows come from :mod:`lbtrain_trainer.synthetic` with inline media, and uploads go to a
recording stand-in for the model run. Production models start from randomly initialised
weights saved in the ``LBTRAIN_PRETRAINED`` layout (the loading path, bf16, channels-last and
fused AdamW are what is checked, not accuracy).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lbtrain import contract
from lbtrain_trainer import export, hyperparams, prepare, synthetic, train
from lbtrain_trainer.settings import Settings


class _Import:
    errors: list[Any] = []
    state = None

    def wait_till_done(self, sleep_time_seconds: int = 0) -> None:
        return None


class RecordingRun:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}

    def add_predictions(self, name: str, rows: list[dict[str, Any]]) -> _Import:
        self.rows += rows
        return _Import()

    def get_config(self) -> dict[str, Any]:
        return self.config

    def update_config(self, config: dict[str, Any]) -> None:
        self.config = config


def one(model_type: str, root: Path, hp: dict[str, Any], pretrained: Path | None) -> dict[str, Any]:
    ws = root / f"{model_type}-{hp.get('model_size')}-{int(time.time() * 1000)}"
    ws.mkdir(parents=True)
    data = synthetic.make_dataset(model_type, hp.pop("rows", 48), model_run_id="mr-gpu")
    (ws / "export.ndjson").write_text("".join(json.dumps(r) + "\n" for r in data.rows))
    settings = Settings(
        model_run_id="mr-gpu",
        model_type=model_type,
        workspace=ws,
        model_id="model-1",
        hyperparameters=hp,
        pretrained=pretrained,
    )
    resolved, _ = hyperparams.resolve_hyperparameters(model_type, hp, {})
    hyperparams.save(resolved, ws / "hyperparameters.json")
    export.fetch_media(settings, resolved)
    prepare.run_prepare(settings)
    run = RecordingRun()
    result = train.run_train(settings, run)
    assert run.rows, "no prediction rows"
    return result


def main() -> int:
    import torch
    from torchvision.models import convnext_tiny
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    print(
        "torch",
        torch.__version__,
        "cuda",
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
        flush=True,
    )
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pretrained = root / "pretrained"
        pretrained.mkdir()
        torch.save(convnext_tiny(weights=None).state_dict(), pretrained / "convnext_tiny.pth")
        torch.save(
            fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict(),
            pretrained / "fasterrcnn_resnet50_fpn_v2.pth",
        )
        cases: list[tuple[str, dict[str, Any]]] = [
            (t, {"model_size": "small", "num_workers": 2}) for t in contract.MODEL_TYPES
        ]
        cases += [
            (
                "image_single_classification",
                {"model_size": "small", "compile": True, "num_workers": 2},
            ),
            (
                "image_single_classification",
                {
                    "model_size": "production",
                    "epochs": 2,
                    "batch_size": 32,
                    "rows": 96,
                    "min_examples_per_class": 1,
                },
            ),
            (
                "bounding_box",
                {
                    "model_size": "production",
                    "epochs": 1,
                    "batch_size": 8,
                    "image_size": 256,
                    "max_image_side": 256,
                    "rows": 32,
                    "min_examples_per_class": 1,
                },
            ),
        ]
        only = [a.removeprefix("--only=") for a in sys.argv if a.startswith("--only=")]
        if only:
            cases = [c for c in cases if c[0] in only]
        if "--small" in sys.argv:  # a quick check of the script itself, e.g. on a CPU
            cases = [c for c in cases if c[1]["model_size"] == "small" and "compile" not in c[1]]
        for model_type, hp in cases:
            label = f"{model_type} {json.dumps(hp)}"
            started = time.perf_counter()
            try:
                result = one(model_type, root, dict(hp), pretrained)
                print(
                    "OK  ",
                    label,
                    f"{time.perf_counter() - started:.1f}s",
                    json.dumps({"metrics": result["metrics"], "throughput": result["throughput"]}),
                    flush=True,
                )
            except Exception as exc:  # report every case, then fail
                failures += 1
                print("FAIL", label, type(exc).__name__, str(exc)[:500], flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
