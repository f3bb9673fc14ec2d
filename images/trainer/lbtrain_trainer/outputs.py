"""What a model says about one data row, independent of the network that said it.

Tasks turn network outputs into :class:`RowOutput`; metrics compare them with the ground
truth, and :mod:`lbtrain_trainer.predictions` turns them into Labelbox NDJSON rows. Keeping
this layer free of torch lets both of those be tested with hand-written values.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtrain_trainer.ner_tags import Span


@dataclass(frozen=True)
class ScoredBox:
    """A detection in pixels of the original image."""

    name: str
    left: float
    top: float
    width: float
    height: float
    score: float


@dataclass(frozen=True)
class RowOutput:
    data_row_id: str
    scores: tuple[float, ...] = ()  # classification: one probability per class
    boxes: tuple[ScoredBox, ...] = ()  # detection: every detection above the model's floor
    spans: tuple[Span, ...] = ()  # NER: decoded entities, inclusive ends
