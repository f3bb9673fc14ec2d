"""The Labelbox id rule, and the ModelRun CRD carrying exactly that rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lbtrain import ids

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "value",
    [
        "ckx0run000000000000000001",  # a classic cuid: c + 24
        "cjhfn5y6s0pk507024nz1ocys",  # an organization id as Labelbox shows it
        "tz4a98xxat96iws9zmbrgj3a",  # a cuid2 (24, no c)
        "a" + "0" * 19,
        "z" * 32,
        "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4",
        "9B2F7C1E-3D4A-4B5C-8D6E-7F8091A2B3C4",
    ],
)
def test_labelbox_ids(value: str) -> None:
    assert ids.is_labelbox_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 19,
        "a" * 33,
        "0" + "a" * 24,
        "ckx0-run-0000000000000001",
        "Ckx0run000000000000000001",
        "ckx0run000000000000000001\n",
        "../../etc/passwd",
        "ckx0run00000000000000000.",
        "9b2f7c1e3d4a4b5c8d6e7f8091a2b3c4",
        "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4 ",
        "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3cx",
        "ckx0run00000000000000000\u0661",  # an Arabic-Indic digit: \d matches it, [0-9] not
    ],
)
def test_not_labelbox_ids(value: str) -> None:
    assert not ids.is_labelbox_id(value)


def test_the_crd_enforces_the_same_pattern_on_every_id_field() -> None:
    crd = yaml.safe_load((REPO / "crds" / "modelruns.lbtrain.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for field in ids.ID_FIELDS:
        prop = schema["properties"][field]
        rules = {r["rule"]: r["message"] for r in prop["x-kubernetes-validations"]}
        assert rules[f"self.matches('{ids.PATTERN}')"] == f"{field} must be {ids.RULE}"
        assert prop["maxLength"] == ids.MAX_LENGTH
