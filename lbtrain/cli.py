"""`lbtrain`: one command line for every part, found rather than named.

The foundation (`lbtrain`) must not import or name the packages above it (the webhook, the
operator, the trainer, the development tools), and an image ships only what runs there. So the
subcommands are Python entry points of the group `lbtrain.commands` (declared in pyproject.toml,
`name = "package.module:main"`), and this module learns them from the installed metadata.

Each command's one-line help is the first line of its module's docstring, read from the source
without importing it. Why there: an entry point carries a name and an object reference but no
text, and a `HELP` constant would need the module imported, which for `trainer` can mean torch
and for every command costs the import of its dependencies; the docstring is already the
module's own summary, so the help cannot drift from a second copy. Finding the source also tells
`lbtrain --help` which commands are installed here, without running any of their code.

A command is imported only when it is called, so `lbtrain webhook` never imports torch and
`lbtrain --help` stays fast.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from lbtrain import __version__

GROUP = "lbtrain.commands"
# A docstring opens with the command in a code span ("`lbtrain webhook`: serve ..."); the help
# line is what follows it.
_COMMAND_PREFIX = re.compile(r"^`{1,2}[^`]+`{1,2}:\s*")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Command:
    name: str
    entry_point: EntryPoint

    @property
    def module(self) -> str:
        return self.entry_point.module


def commands(found: Iterable[EntryPoint] | None = None) -> dict[str, Command]:
    """The installed subcommands, sorted by name.

    A name found twice (an editable install seen both through site-packages and through a
    `*.egg-info` folder on the path) keeps its first entry point, the one Python would import.
    """
    out: dict[str, Command] = {}
    for ep in entry_points(group=GROUP) if found is None else found:
        out.setdefault(ep.name, Command(ep.name, ep))
    return dict(sorted(out.items()))


def find_source(module: str) -> str | None:
    """The path of a module's source file, or None if it is not installed; imports nothing.

    `importlib.util.find_spec("a.b")` would import `a` (and `lbtrain_webhook/__init__` pulls in
    aiohttp), so only the top-level name goes through the import system (which knows editable
    installs) and the rest is looked up in its folders.
    """
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for depth in range(len(rest)):
        if spec is None or spec.submodule_search_locations is None:
            return None
        name = ".".join([top, *rest[: depth + 1]])
        spec = importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
    return spec.origin if spec is not None and spec.has_location else None


def summary(docstring: str | None) -> str:
    """A docstring's first line without its leading "`lbtrain name`: ", as a help line."""
    first = (docstring or "").strip().splitlines()[0:1]
    line = _COMMAND_PREFIX.sub("", first[0].strip()) if first else ""
    return line.rstrip(".")


def help_line(module: str) -> str:
    """The one-line help of a command module, or a note that it is not installed here."""
    path = find_source(module)
    if path is None:
        return "(not available here)"
    try:
        with open(path, encoding="utf-8") as src:
            tree = ast.parse(src.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return ""
    return summary(ast.get_docstring(tree))


def usage(found: dict[str, Command]) -> str:
    width = max((len(n) for n in found), default=0)
    lines = [
        f"usage: lbtrain <command> [options]      (lbtrain {__version__})",
        "",
        "Train Labelbox model runs on your own Kubernetes cluster.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_line(c.module)}" for name, c in found.items()),
        "",
        "Run `lbtrain <command> --help` for a command's options.",
    ]
    return "\n".join(lines)


def extra_providing(missing: str, requires: Iterable[str]) -> str | None:
    """The extra of this distribution that installs the missing module, if one declares it.

    `requires` are Requires-Dist lines such as `torch>=2.4; extra == "trainer"`; a module is
    matched to the requirement of the same name (torch, numpy...), which covers what our extras
    bring in.
    """
    wanted = missing.split(".")[0].lower().replace("_", "-")
    for req in requires:
        name, extra = _REQUIREMENT_NAME.match(req), _EXTRA_MARKER.search(req)
        if name and extra and name.group(1).lower().replace("_", "-") == wanted:
            return extra.group(1)
    return None


def not_available(command: Command, exc: ModuleNotFoundError) -> str:
    """Why a command cannot run here, and what to install when its distribution says."""
    text = f"lbtrain {command.name}: not available here: {exc}"
    dist = command.entry_point.dist
    if exc.name and dist is not None:
        extra = extra_providing(exc.name, dist.requires or ())
        if extra:
            text += f" (install the {extra} extra: pip install '{dist.name}[{extra}]')"
    elif exc.name and command.module.split(".")[0] == exc.name:
        text += f" (this installation leaves {exc.name} out)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    found = commands()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(found))
        return 0
    if args[0] == "--version":
        print(f"lbtrain {__version__}")
        return 0
    name, rest = args[0], args[1:]
    command = found.get(name)
    if command is None:
        print(f"lbtrain: unknown command {name!r}\n\n{usage(found)}", file=sys.stderr)
        return 2
    try:
        run = command.entry_point.load()
    except ModuleNotFoundError as exc:
        print(not_available(command, exc), file=sys.stderr)
        return 2
    result: int = run(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
