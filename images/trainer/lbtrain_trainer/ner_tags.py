"""Character spans <-> per-token BIO tags, the heart of NER training and prediction.

Labelbox entities are character spans with an **inclusive** end (docs/labelbox.md §5.5); the fast
tokenizer gives half-open character offsets per token. Training needs a tag per token, and
prediction needs spans back, in Labelbox's inclusive convention. Both directions live here,
pure and tested together as a round trip. Tag ids: 0 is O; for class k, 1 + 2k is B and
2 + 2k is I; special and padding tokens get ``IGNORE`` so the loss skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE = -100


def num_tags(num_classes: int) -> int:
    return 1 + 2 * num_classes


def tag_names(classes: Sequence[str]) -> list[str]:
    return ["O"] + [f"{p}-{c}" for c in classes for p in ("B", "I")]


def spans_to_tags(
    offsets: Sequence[tuple[int, int]],
    special: Sequence[int],
    spans: Sequence[tuple[str, int, int]],
    classes: Sequence[str],
) -> list[int]:
    """Tag each token; ``spans`` are ``(class, start, end_inclusive)``."""
    index = {c: i for i, c in enumerate(classes)}
    tags = [
        IGNORE if sp or end <= start else 0
        for (start, end), sp in zip(offsets, special, strict=True)
    ]
    for name, start, end_inclusive in spans:
        first = True
        for i, ((tok_start, tok_end), sp) in enumerate(zip(offsets, special, strict=True)):
            if sp or tok_end <= tok_start:
                continue
            if tok_start <= end_inclusive and tok_end > start:  # the token overlaps the span
                tags[i] = 1 + 2 * index[name] + (0 if first else 1)
                first = False
    return tags


@dataclass(frozen=True)
class Span:
    name: str
    start: int
    end: int  # inclusive, as Labelbox wants it
    confidence: float


def tags_to_spans(
    offsets: Sequence[tuple[int, int]],
    special: Sequence[int],
    tags: Sequence[int],
    confidences: Sequence[float],
    classes: Sequence[str],
) -> list[Span]:
    """Decode BIO tags to spans; a stray I- starts a new entity (lenient decoding)."""
    spans: list[Span] = []
    current: tuple[int, int, int, list[float]] | None = None  # class, start, end_excl, probs

    def close() -> None:
        nonlocal current
        if current is not None:
            cls, start, end, probs = current
            spans.append(Span(classes[cls], start, end - 1, sum(probs) / len(probs)))
            current = None

    for (tok_start, tok_end), sp, tag, conf in zip(
        offsets, special, tags, confidences, strict=True
    ):
        if sp or tok_end <= tok_start:
            continue
        if tag <= 0:
            close()
            continue
        cls, inside = (tag - 1) // 2, (tag - 1) % 2 == 1
        if inside and current is not None and current[0] == cls:
            current = (cls, current[1], tok_end, [*current[3], conf])
        else:
            close()
            current = (cls, tok_start, tok_end, [conf])
    close()
    return spans
