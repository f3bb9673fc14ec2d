"""Model types (issue 27): the registry is the contract's list plus what plugins add, it refuses
broken plugins, every built-in type passes one conformance test through the real stages, an
unknown type fails with exit 65 naming the known ones, and no trainer module outside the type
modules compares a type's name."""

from __future__ import annotations

import importlib.metadata
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer.errors import ConfigError, PluginError, UnknownModelTypeError
from lbtrain_trainer.ground_truth import class_members
from lbtrain_trainer.hyperparams import RESULTS_KEY, Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.modeltypes import registry
from lbtrain_trainer.modeltypes.base import Evaluation, ModelType, Pair, SyntheticLabel, Truth
from lbtrain_trainer.rows import ExportRow
from lbtrain_trainer.tasks.base import Task, TaskContext

TRAINER = Path(__file__).resolve().parents[2] / "images" / "trainer" / "lbtrain_trainer"


# --- plugins for the registry's checks, loaded through real EntryPoint objects ----------------


class Tiny(ModelType):
    """A complete type that is never trained (the registry only checks the shape)."""

    name = "tiny"
    media = "text"
    headline_metric = "accuracy"

    def ground_truth(
        self, *, row: ExportRow, base: Example, feature: str, media_file: Path, hp: Hyperparameters
    ) -> Truth:
        return Truth(base)

    def task(self, ctx: TaskContext) -> Task:
        raise NotImplementedError

    def evaluate(
        self,
        *,
        dataset: PreparedDataset,
        hp: Hyperparameters,
        model_run_id: str,
        pairs: Sequence[Pair],
        tune_pairs: Sequence[Pair],
    ) -> Evaluation:
        return Evaluation("accuracy", 0.0, {}, [])

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        return SyntheticLabel(b"x", "text/plain", {})


class Incomplete(ModelType):  # evaluate, task, ... left out
    name = "incomplete"
    media = "image"
    headline_metric = "map50"

    def ground_truth(
        self, *, row: ExportRow, base: Example, feature: str, media_file: Path, hp: Hyperparameters
    ) -> Truth:
        return Truth(base)


class NoMedia(Tiny):
    name = "no_media"
    media = "video"  # type: ignore[assignment]


class ClashesWithBuiltIn(Tiny):
    name = "ner"


NOT_A_TYPE = object()


def _entry_point(name: str, attribute: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(
        name, f"{__name__}:{attribute}", registry.ENTRY_POINT_GROUP
    )


def test_the_built_in_registry_is_the_contracts_list():
    built = registry.build(entry_points=[])
    assert built.names() == contract.MODEL_TYPES
    assert {r.origin for r in built.registrations()} == {registry.BUILT_IN}
    for r in built.registrations():  # one module per type, named after it
        assert r.source == f"lbtrain_trainer.modeltypes.{r.name}"


def test_a_plugin_adds_its_type_after_the_built_ins():
    built = registry.build(entry_points=[_entry_point("tiny", "Tiny")])
    assert built.names() == (*contract.MODEL_TYPES, "tiny")
    assert isinstance(built.get("Tiny"), Tiny)  # case-insensitive, like the seed list
    origin = built.registrations()[-1]
    assert origin.source == f"{__name__}:Tiny" and origin.origin == "an unknown distribution"


@pytest.mark.parametrize(
    ("entry_points", "needle"),
    [
        ([("ner", "ClashesWithBuiltIn")], "'ner' from .* is already registered by built-in"),
        ([("tiny", "Tiny"), ("tiny", "Tiny")], "'tiny' .* is already registered"),
        ([("incomplete", "Incomplete")], "incomplete.*abstract"),
        ([("no_media", "NoMedia")], "incomplete: media must be one of image, text"),
        ([("other", "Tiny")], "calls itself 'tiny'"),
        ([("odd", "NOT_A_TYPE")], "not a lbtrain_trainer.modeltypes.base.ModelType"),
        ([("gone", "NoSuchAttribute")], "cannot be loaded"),
    ],
)
def test_the_registry_refuses_broken_plugins(entry_points, needle):
    with pytest.raises(PluginError, match=needle) as caught:
        registry.build(entry_points=[_entry_point(n, a) for n, a in entry_points])
    assert caught.value.exit_code == 2


def test_an_unknown_type_is_an_error_naming_the_known_ones():
    with pytest.raises(UnknownModelTypeError) as caught:
        registry.get("image_knn_classification")
    assert caught.value.exit_code == contract.EXIT_BAD_INPUT
    assert isinstance(caught.value, ConfigError)  # a setting, too (settings.normalize_model_type)
    for name in contract.MODEL_TYPES:
        assert name in str(caught.value)


def test_an_unknown_type_fails_the_stage_with_65(seed):
    run = seed("text_single_classification", 10)
    run.model_type = "image_knn_classification"
    assert run.main("export") == contract.EXIT_BAD_INPUT
    failure = run.summary()
    assert failure["status"] == "failed" and failure["exit_code"] == contract.EXIT_BAD_INPUT
    assert "unknown model type 'image_knn_classification'" in failure["error"]
    assert all(name in failure["error"] for name in contract.MODEL_TYPES)
    assert not run.workspace.exists()  # refused before anything was written


def test_no_trainer_module_outside_the_type_modules_names_a_type():
    """The bar of issue 27: a type's name (or a suffix of one) appears only in its module and
    the registry. rows.py names Labelbox's box annotation key, which happens to be spelt like
    the box type."""
    words = re.compile(
        r"\b(" + "|".join((*contract.MODEL_TYPES, r"\w*(?:single|multi)_classification")) + r")\b"
    )
    allowed = {("rows.py", 'BOX_KEY = "bounding_box"')}
    found = []
    for path in sorted(TRAINER.rglob("*.py")):
        if "modeltypes" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if words.search(line) and (path.name, line.strip()) not in allowed:
                found.append(f"{path.relative_to(TRAINER)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# --- conformance: every built-in type through the real stages, tiny --------------------------


@pytest.mark.trainer
@pytest.mark.parametrize("model_type", contract.MODEL_TYPES)
def test_a_built_in_type_conforms(seed, model_type):
    """Parse its synthetic labels, prepare, train a few steps, evaluate, and write rows the fake
    Labelbox accepts (the train stage fails if an import reports a rejected row)."""
    pytest.importorskip("torch")
    kind = registry.get(model_type)
    run = seed(model_type, 40, epochs=1)
    assert run.main("export") == 0, run.summary()
    assert run.main("prepare") == 0, run.summary()
    dataset = PreparedDataset.load(run.workspace / "prepared" / "dataset.json")
    assert dataset.classes == kind.synthetic_classes
    assert dataset.feature_name == kind.synthetic_feature
    assert all(class_members(e) for e in dataset.examples)  # every label became ground truth
    assert run.main("train") == 0, run.summary()
    trained = run.summary()
    assert trained["headline_metric"] == kind.headline_metric
    assert 0 <= trained["metrics"][kind.headline_metric] <= 1
    uploaded = run.predictions()
    every_row = {e.data_row_id for e in dataset.examples}  # predict_splits "all"
    assert {r["dataRow"]["id"] for r in uploaded} <= every_row
    assert trained["predictions"] + trained["metric_rows"] == len(uploaded)
    assert uploaded  # after one epoch a model may predict nothing, but metric rows are written
    for name in run.fake.imports(run.run_id):
        assert run.fake.import_errors(run.run_id, name) == []
    results: dict[str, Any] = run.fake.config(run.run_id)[RESULTS_KEY]
    assert results["model_type"] == model_type
