"""Production models load pretrained weights from LBTRAIN_PRETRAINED and never from a hub.

Real pretrained weights are not available offline, so these tests save randomly initialised
networks in the layout a deployment bakes into the image; what is tested is the loading path
(local files only, a new head of the right size) and the refusal to download.
"""

from __future__ import annotations

import pytest

from lbtrain import contract

pytestmark = pytest.mark.trainer


def test_production_without_weights_refuses_to_download(seed):
    run = seed("image_single_classification", model_size="production", epochs=1)
    assert run.main("run") == 2
    error = run.summary()["error"]
    assert contract.ENV_PRETRAINED in error and "convnext_tiny.pth" in error


def test_production_text_model_trains_from_a_local_pretrained_directory(seed, tmp_path):
    from lbtrain_trainer import synthetic
    from lbtrain_trainer.models.pretrained import TEXT_DIR
    from lbtrain_trainer.rows import parse_row

    run = seed(
        "ner", model_size="production", epochs=2, batch_size=8, max_length=48, learning_rate=0.003
    )
    inline = synthetic.make_dataset("ner", 40)  # the same sentences, text inline
    texts = [parse_row(r, "mr-1").row_data for r in inline.rows]
    synthetic.save_random_text_encoder(
        tmp_path / "pretrained" / TEXT_DIR,
        texts,
        300,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    run.pretrained = tmp_path / "pretrained"
    assert run.main("run") == 0, run.termination.read_text()
    summary = run.summary()
    assert summary["model_size"] == "production"
    assert (run.artifacts / "model" / "tokenizer.json").exists()
    assert run.predictions()


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["image_single_classification", "bounding_box"])
def test_production_vision_models_load_local_state_dicts(seed, tmp_path, model_type):
    import torch
    from torchvision.models import convnext_tiny
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    root = tmp_path / "pretrained"
    root.mkdir()
    if model_type == "bounding_box":
        torch.save(
            fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict(),
            root / "fasterrcnn_resnet50_fpn_v2.pth",
        )
    else:
        torch.save(convnext_tiny(weights=None).state_dict(), root / "convnext_tiny.pth")
    run = seed(
        model_type,
        n_rows=4,  # the first synthetic rows are all training rows: evaluated on train
        min_examples_per_class=1,
        model_size="production",
        epochs=1,
        batch_size=4,  # one step: Faster R-CNN v2 costs tens of GFLOP per image
        image_size=64,
        max_image_side=64,
        cpu_threads=2,
    )
    run.pretrained = root
    assert run.main("run") == 0, run.termination.read_text()
    assert run.summary()["model_size"] == "production"
