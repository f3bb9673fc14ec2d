"""One truth for the production path: what the templates ask for is what the image holds.

A TrainingTemplate names a pretrained-weights path and describes its model; the trainer image
bakes weights (images/trainer/Dockerfile, through `lbtrain_trainer.bake_weights`) and the
trainer resolves them (`lbtrain_trainer.models.pretrained`). Each of these is written in a
different file, so each test here reads the real files and fails when one drifts: the chart's
default templates (values.yaml, merged as its template merges them; tests/helm checks that the
rendered chart equals examples/templates), the examples, the Dockerfile and the READMEs.

The weights are the stand-ins the local test image bakes (`bake_weights --stand-in`, the same
code the image runs), laid out in a temporary root exactly where the Dockerfile puts them.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbtrain import contract
from lbtrain_trainer.hyperparams import resolve_hyperparameters
from lbtrain_trainer.models.pretrained import (
    CONVNEXT_FILE,
    DETECTOR_FILE,
    HUB_TEXT_MODEL,
    STAND_IN_MARKER,
    TEXT_DIR,
    text_model_dir,
    weights_file,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "trainer" / "Dockerfile"
VALUES = REPO / "deploy" / "helm" / "lbtrain" / "values.yaml"
EXAMPLES = REPO / "examples" / "templates"
TRAINER_README = REPO / "images" / "trainer" / "README.md"
CHART_README = REPO / "deploy" / "helm" / "lbtrain" / "README.md"

# What each model type's production model loads (models/image_classifier.py, detector.py,
# text.py); the slow test below builds the models themselves, so this table cannot lie for long.
NEEDS = {
    "bounding_box": DETECTOR_FILE,
    "image_single_classification": CONVNEXT_FILE,
    "image_multi_classification": CONVNEXT_FILE,
    "ner": TEXT_DIR,
    "text_single_classification": TEXT_DIR,
    "text_multi_classification": TEXT_DIR,
}


# --- the Dockerfile, read as instructions -------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage (`FROM x AS name`)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            current = out.setdefault(args.split()[-1], [])
        current.append((keyword, args))
    return out


def arg_default(path: Path, name: str) -> str:
    for keyword, args in instructions(path):
        if keyword == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1]
    raise AssertionError(f"{path} has no ARG {name}=<default>")


def runtime_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stages(path)["runtime"]:
        if keyword == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def bake_destinations(path: Path) -> set[str]:
    """The directories the weights stage's RUN passes to `lbtrain_trainer.bake_weights`."""
    found: set[str] = set()
    for keyword, args in stages(path)["weights"]:
        if keyword == "RUN":
            found |= set(re.findall(r"lbtrain_trainer\.bake_weights\s+(\S+)", args))
    return found


def weights_copied_to(path: Path) -> str:
    """Where the runtime stage puts the weights stage's directory."""
    for keyword, args in stages(path)["runtime"]:
        if keyword == "COPY" and args.startswith("--from=weights "):
            return args.split()[-1]
    raise AssertionError("the runtime stage copies no weights from the weights stage")


IMAGE_PRETRAINED = runtime_env(DOCKERFILE)[contract.ENV_PRETRAINED]
IMAGE_TEXT_MODEL = arg_default(DOCKERFILE, "TEXT_MODEL")


# --- the templates: the chart's defaults and the examples --------------------------------------


def chart_templates() -> dict[str, dict[str, Any]]:
    """values.yaml's default templates, each merged over `defaults` as the chart merges them
    (a template's own field replaces the default's whole field)."""
    section = yaml.safe_load(VALUES.read_text())["trainingTemplates"]
    return {
        name: {**section["defaults"], **template}
        for name, template in section["templates"].items()
        if str(template.get("enabled", True)).lower() != "false"
    }


def example_templates() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text())["spec"] for p in sorted(EXAMPLES.glob("*.yaml"))}


TEMPLATES = [
    pytest.param(spec, id=f"{source}:{name}")
    for source, found in (("chart", chart_templates()), ("example", example_templates()))
    for name, spec in found.items()
]


def in_root(root: Path, image_path: str) -> Path:
    """An absolute path of the image, inside a temporary root standing for the image's `/`."""
    return root / image_path.lstrip("/")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root laid out like the test image: the stand-ins baked where the Dockerfile bakes."""
    from lbtrain_trainer import bake_weights

    root = tmp_path_factory.mktemp("image-root")
    (destination,) = bake_destinations(DOCKERFILE)
    assert bake_weights.main([str(in_root(root, destination)), "--stand-in"]) == 0
    return root


# --- the tests ----------------------------------------------------------------------------------


def test_both_template_sources_hold_every_model_type() -> None:
    assert set(NEEDS) == set(contract.MODEL_TYPES)
    for found in (chart_templates(), example_templates()):
        assert sorted(t["modelType"] for t in found.values()) == sorted(contract.MODEL_TYPES)


def test_the_image_looks_for_its_weights_where_it_bakes_them() -> None:
    assert bake_destinations(DOCKERFILE) == {IMAGE_PRETRAINED}
    assert weights_copied_to(DOCKERFILE) == IMAGE_PRETRAINED


def test_the_image_bakes_the_text_model_the_trainer_names() -> None:
    """The Dockerfile's TEXT_MODEL default, the trainer's hub fallback and bake_weights' default
    are one model."""
    from lbtrain_trainer import bake_weights

    assert IMAGE_TEXT_MODEL == HUB_TEXT_MODEL
    assert bake_weights.build_parser().get_default("text_model") == IMAGE_TEXT_MODEL


@pytest.mark.parametrize("spec", TEMPLATES)
def test_template_points_at_the_image_weights(spec: dict[str, Any]) -> None:
    assert spec["pretrained"] == IMAGE_PRETRAINED


@pytest.mark.parametrize("spec", TEMPLATES)
def test_template_hyperparameters_are_all_read_by_the_trainer(spec: dict[str, Any]) -> None:
    """A key the trainer ignores (say `lr` for `learning_rate`) would silently train with the
    trainer's default instead."""
    hp, ignored = resolve_hyperparameters(spec["modelType"], spec["hyperparameters"])
    assert ignored == []
    assert hp.model_size == "production"


@pytest.mark.parametrize("spec", TEMPLATES)
def test_template_describes_the_model_the_image_bakes(spec: dict[str, Any]) -> None:
    names = {
        CONVNEXT_FILE: "ConvNeXt-T",
        DETECTOR_FILE: "Faster R-CNN v2",
        TEXT_DIR: f"BERT ({IMAGE_TEXT_MODEL}",
    }
    assert names[NEEDS[spec["modelType"]]] in spec["description"]


def test_chart_readme_names_the_text_model_the_image_bakes() -> None:
    rows = [
        line
        for line in CHART_README.read_text().splitlines()
        if re.match(r"\| `(ner|text-single-classification|text-multi-classification)` \|", line)
    ]
    assert len(rows) == 3
    assert all("BERT" in row and IMAGE_TEXT_MODEL in row for row in rows)


def test_trainer_readme_states_the_image_layout() -> None:
    text = TRAINER_README.read_text()
    assert f"mount it** at `{IMAGE_PRETRAINED}`" in text
    assert f"TEXT_MODEL={IMAGE_TEXT_MODEL}" in text
    assert "BAKE_WEIGHTS=stand-in" in text


@pytest.mark.trainer
@pytest.mark.parametrize("spec", TEMPLATES)
def test_template_production_model_finds_its_weights_in_the_image(
    spec: dict[str, Any], image_root: Path
) -> None:
    """The trainer's own resolver, no download allowed, on the template's path in the image."""
    root = in_root(image_root, spec["pretrained"])
    need = NEEDS[spec["modelType"]]
    if need == TEXT_DIR:
        found = Path(text_model_dir(root, allow_download=False))
        assert (found / "config.json").is_file() and (found / "tokenizer.json").is_file()
    else:
        found_file = weights_file(root, need, allow_download=False)
        assert found_file is not None and found_file.is_file()


@pytest.mark.trainer
def test_stand_in_weights_say_what_they_are(image_root: Path) -> None:
    marker = in_root(image_root, IMAGE_PRETRAINED) / STAND_IN_MARKER
    assert "STAND-IN WEIGHTS FOR TESTS" in marker.read_text()
    assert "useless" in marker.read_text()


@pytest.mark.trainer
def test_the_trainer_warns_when_it_finds_stand_ins(
    image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = in_root(image_root, IMAGE_PRETRAINED)
    with caplog.at_level(logging.WARNING, logger="lbtrain_trainer.models.pretrained"):
        weights_file(root, DETECTOR_FILE, allow_download=False)
        text_model_dir(root, allow_download=False)
    warnings = [r.getMessage() for r in caplog.records if "stand-in" in r.getMessage()]
    assert len(warnings) == 2 and all(STAND_IN_MARKER in w for w in warnings)


@pytest.mark.trainer
def test_stand_in_weights_are_readable_by_the_trainer_user(image_root: Path) -> None:
    """The image runs the trainer as uid 10001: nothing baked may be readable by root only."""
    for path in in_root(image_root, IMAGE_PRETRAINED).rglob("*"):
        assert path.stat().st_mode & 0o004, path


@pytest.mark.trainer
@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(NEEDS))
def test_production_models_load_the_stand_ins(model_type: str, image_root: Path) -> None:
    """The trainer's production builders load the baked files (strict state dicts, the text
    encoder and its tokenizer) and run one forward pass."""
    import torch

    root = in_root(image_root, IMAGE_PRETRAINED)
    model: Any
    with torch.no_grad():
        if NEEDS[model_type] == CONVNEXT_FILE:
            from lbtrain_trainer.models.image_classifier import build_image_classifier

            model = build_image_classifier(3, "production", root, False).eval()
            assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)
        elif NEEDS[model_type] == DETECTOR_FILE:
            from lbtrain_trainer.models.detector import build_detector

            model = build_detector(2, "production", 128, 128, root, False).eval()
            assert set(model([torch.rand(3, 128, 128)])[0]) >= {"boxes", "scores", "labels"}
        else:
            from lbtrain_trainer.models.text import build_text_model
            from lbtrain_trainer.text_encoding import TextEncoder

            encoder = TextEncoder.from_pretrained(Path(text_model_dir(root, False)), 16, False)
            encoded = encoder.encode(["Alice Smith flew to Paris on Monday."])
            kind = "token" if model_type == "ner" else "sequence"
            model = build_text_model(
                kind,
                3,
                "production",
                vocab_size=0,
                max_length=16,
                pad_id=0,
                pretrained=root,
                allow_download=False,
            ).eval()
            logits = model(input_ids=torch.tensor(encoded.ids)).logits
            assert logits.shape[-1] == 3
