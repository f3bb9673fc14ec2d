"""The generated blocks of bench/README.md: each bench owns the text between its two markers.

A bench rewrites only its block (``<!-- NAME: begin -->`` … ``<!-- NAME: end -->``); the
hand-written text around it, and the other benches' blocks, are kept. `replace_block` is pure
(tested without a file); `write_block` reads and writes the README.
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of the block named `name` (a bench's file name)."""
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_block(current: str, begin: str, end: str, block: str) -> str | None:
    """`current` with what lies between the markers (the markers included) replaced by
    `block`; None when the markers are not there."""
    if begin not in current or end not in current:
        return None
    before, rest = current.split(begin, 1)
    return before + block + rest.split(end, 1)[1]


def with_block(current: str, name: str, text: str, heading: str) -> str:
    """`current` with block `name` holding `text`; a README without that block gets it at the
    end of the section `heading` (``## operator``), or in a new section at the end."""
    begin, end = markers(name)
    block = f"{begin}\n{text.rstrip()}\n{end}"
    updated = replace_block(current, begin, end, block)
    if updated is not None:
        return updated
    if heading in current.splitlines():
        head, rest = current.split(heading + "\n", 1)
        following = rest.find("\n## ")
        section, after = (rest, "") if following < 0 else (rest[:following], rest[following:])
        return f"{head}{heading}\n{section.rstrip()}\n\n{block}\n{after}"
    return f"{current.rstrip()}\n\n{heading}\n\n{block}\n"


def write_block(name: str, text: str, heading: str, readme: Path = README) -> None:
    """Write block `name` into bench/README.md (see `with_block`)."""
    current = readme.read_text() if readme.exists() else "# Benchmarks\n"
    readme.write_text(with_block(current, name, text, heading).rstrip() + "\n")
