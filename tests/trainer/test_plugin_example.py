"""The worked example of issue 27: ``examples/plugin-polygon``, a model type in its own
distribution, pip-installed (into a ``--target`` folder on the path, as a wheel would be into
the image) and found only through its ``lbtrain.model_types`` entry point.

It is listed by ``lbtrain trainer types`` with its distribution, and it trains end to end
against the fake Labelbox through the same three stages as the built-in types, each a separate
``python -m lbtrain trainer`` process configured by the environment contract alone.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtrain import contract
from lbtrain_trainer import features
from lbtrain_trainer.modeltypes import registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-polygon"
DISTRIBUTION = "lbtrain-polygon 0.1.0"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example installed with pip into a folder put on ``sys.path`` for this module (the
    registry is rebuilt on both sides, so other tests never see the plugin)."""
    # A copy: building in place would leave build/ and *.egg-info in the checkout.
    source = tmp_path_factory.mktemp("plugin-source") / "plugin-polygon"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--no-index", "--target", str(site)),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    registry.reset()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("lbtrain_polygon", None)
        registry.reset()


@pytest.fixture
def plugin_path(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin on the path of every Python process the test starts, too."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])
    )
    return plugin_site


def test_the_registry_is_the_contract_plus_the_plugin(plugin_site):
    assert registry.known_types() == (*contract.MODEL_TYPES, "polygon")
    polygon = registry.registry().registrations()[-1]
    assert polygon.origin == DISTRIBUTION and polygon.source == "lbtrain_polygon:Polygon"


def test_trainer_types_lists_the_plugin_with_its_distribution(plugin_path):
    listed = subprocess.run(
        [sys.executable, "-m", "lbtrain", "trainer", "types", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    types = {t["name"]: t for t in map(json.loads, listed.splitlines())}
    assert list(types) == [*contract.MODEL_TYPES, "polygon"]
    assert types["polygon"]["origin"] == DISTRIBUTION
    assert types["polygon"]["media"] == "image" and types["polygon"]["headline_metric"] == "map50"
    assert {types[t]["origin"] for t in contract.MODEL_TYPES} == {"built-in"}


@pytest.mark.trainer
def test_the_plugin_trains_and_uploads_polygons_through_the_stages(plugin_path, seed):
    pytest.importorskip("torch")
    # Every detection the model finds is uploaded (the default floor is 0.3), so that a short
    # run still shows the polygon rows.
    run = seed("polygon", 100, epochs=8, score_threshold=0.05)
    for stage in contract.STAGES:
        assert run.process(stage) == 0, run.last_stderr
    trained = run.summary()
    assert trained["status"] == "ok" and trained["model_type"] == "polygon"
    assert trained["headline_metric"] == "map50"
    # bounding_box's held-out bar (test_end_to_end); this run scored 1.0 on the author's machine
    assert trained["metrics"]["map50"] >= 0.5, trained["metrics"]
    assert trained["per_class"].keys() == {"diamond", "triangle"}
    for name in run.fake.imports(run.run_id):
        assert run.fake.import_errors(run.run_id, name) == []
    shapes = [r for r in run.predictions() if "metricValue" not in r]
    assert shapes and len(shapes) == trained["predictions"]
    for row in shapes:
        tools = {features.collect(run.dataset.rows)["features"][n] for n in ("diamond", "triangle")}
        assert "bbox" not in row and row["schemaId"] in tools  # the export carried schema ids
        assert len(row["polygon"]) == 4 and 0 <= row["confidence"] <= 1
