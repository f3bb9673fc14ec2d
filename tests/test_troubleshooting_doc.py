"""docs/troubleshooting.md has a section for every reason the operator reports, headed by the
reason as `kubectl get mr` shows it: a user who reads a reason finds what to do. A new reason in
reasons.py fails here until its section is written."""

from __future__ import annotations

import re

from lbtrain_dev.testbed.binaries import repo_root
from lbtrain_operator import reasons

DOC = repo_root() / "docs" / "troubleshooting.md"
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]+$")
PARTS = ("**Seen as:**", "**Causes:**", "**What to do:**")


def reason_names() -> set[str]:
    """Every reason constant of reasons.py: an upper-case name, not a message, whose value is
    one CamelCase word."""
    return {
        value
        for name, value in vars(reasons).items()
        if name.isupper() and not name.startswith("MSG_") and isinstance(value, str)
    }


def sections(text: str) -> dict[str, str]:
    """Each `#### Heading` of the reasons part, with its body."""
    parts = re.split(r"^#### (\S+)\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_reason_has_a_section_saying_what_to_do() -> None:
    names = reason_names()
    assert {"Unschedulable", "OOMKilled", "LabelboxModelRunNotFound"} <= names
    assert all(CAMEL.match(n) for n in names), sorted(n for n in names if not CAMEL.match(n))
    found = sections(DOC.read_text())
    missing = sorted(names - found.keys())
    assert not missing, f"docs/troubleshooting.md has no '#### <Reason>' section for {missing}"
    for name in names:
        body = found[name]
        for part in PARTS:
            assert part in body, f"the {name} section lacks {part}"


def test_links_inside_the_page_land_on_a_heading() -> None:
    text = DOC.read_text()
    slugs = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - slugs, sorted(links - slugs)
