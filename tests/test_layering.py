"""The packages import one way: the foundation nothing above it, each component only the
foundation and itself, and nothing that ships in an image the development tools.

Read from the source with `ast` (imports inside functions count too), so a violation fails here
before it fails in an image that lacks the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"lbtrain", "lbtrain_webhook", "lbtrain_operator", "lbtrain_trainer", "lbtrain_dev"}

# package -> (its folder, the first-party packages it may import)
LAYERS: dict[str, tuple[Path, set[str]]] = {
    "lbtrain": (REPO / "lbtrain", {"lbtrain"}),
    "lbtrain_webhook": (REPO / "webhook/lbtrain_webhook", {"lbtrain", "lbtrain_webhook"}),
    "lbtrain_operator": (REPO / "operator/lbtrain_operator", {"lbtrain", "lbtrain_operator"}),
    "lbtrain_trainer": (REPO / "images/trainer/lbtrain_trainer", {"lbtrain", "lbtrain_trainer"}),
    "lbtrain_dev": (REPO / "devtools/lbtrain_dev", FIRST_PARTY),
}


def first_party_imports(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every first-party import in one module."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(n.split(".")[0], node.lineno) for n in names if n.split(".")[0] in FIRST_PARTY}
    return found


def violations(package: str) -> list[str]:
    folder, allowed = LAYERS[package]
    return [
        f"{path.relative_to(REPO)}:{line} imports {top}"
        for path in sorted(folder.rglob("*.py"))
        for top, line in sorted(first_party_imports(path))
        if top not in allowed
    ]


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_go_one_way(package: str) -> None:
    assert violations(package) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule above would pass vacuously if the checker saw no imports at all."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from lbtrain_dev.testbed import ControlPlane\n    import lbtrain\n"
    )
    assert first_party_imports(bad) == {("lbtrain_dev", 2), ("lbtrain", 3)}


def test_no_development_tooling_left_in_the_foundation() -> None:
    """The testbed, the fake Labelbox and the demo live in devtools/ only."""
    leftovers = [p.name for p in (REPO / "lbtrain").iterdir() if p.name in ("testbed", "devtools")]
    assert leftovers == []
