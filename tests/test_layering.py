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


# The operator's decisions: pure functions of plain values, tested as such. They may import the
# foundation's models and each other, never a module that talks to the API server, Labelbox or
# kopf, so a decision cannot quietly grow a side effect.
OPERATOR = REPO / "operator/lbtrain_operator"
PURE_OPERATOR_MODULES = (
    "admission",
    "cancellation",
    "delivery",
    "jobspec",
    "listing",
    "outbox",
    "owners",
    "podstate",
    "progress",
    "reasons",
    "runstatus",
    "settings",
)
IO_MODULES = (
    "aiohttp",
    "kopf",
    "labelbox",
    "prometheus_client",
    "lbtrain.kube",
    "lbtrain_operator.attemptstep",
    "lbtrain_operator.children",
    "lbtrain_operator.cli",
    "lbtrain_operator.events",
    "lbtrain_operator.handlers",
    "lbtrain_operator.heartbeat",
    "lbtrain_operator.informer",
    "lbtrain_operator.labelbox",
    "lbtrain_operator.metrics",
    "lbtrain_operator.queuestep",
    "lbtrain_operator.reconcile",
    "lbtrain_operator.templatesource",
)


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """(dotted module, line) of every absolute import in one module; `from a import b` counts
    as both `a` and `a.b`, since `b` may be a module."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module, node.lineno))
            found |= {(f"{node.module}.{alias.name}", node.lineno) for alias in node.names}
    return found


def first_party_imports(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every first-party import in one module."""
    return {
        (name.split(".")[0], line)
        for name, line in imported_modules(path)
        if name.split(".")[0] in FIRST_PARTY
    }


def io_imports(path: Path) -> list[str]:
    return sorted(
        f"{path.name}:{line} imports {name}"
        for name, line in imported_modules(path)
        if any(name == io or name.startswith(io + ".") for io in IO_MODULES)
    )


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


@pytest.mark.parametrize("module", PURE_OPERATOR_MODULES)
def test_the_operators_decisions_import_no_io(module: str) -> None:
    assert io_imports(OPERATOR / f"{module}.py") == []


def test_the_io_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from lbtrain.kube import KubeClient\nfrom lbtrain_operator import events\n")
    assert io_imports(bad) == [
        "bad.py:1 imports lbtrain.kube",
        "bad.py:1 imports lbtrain.kube.KubeClient",
        "bad.py:2 imports lbtrain_operator.events",
    ]


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
