"""The TrainingTemplate status the operator keeps: task and Listed, written only on change."""

from __future__ import annotations

from typing import Any

from lbtrain.resources.catalogue import NAME_CONFLICT, Catalogue, Listing, listing_of
from lbtrain_operator.listing import newly_conflicted, template_status

from .builders import template_object


def listing(obj: dict[str, Any]) -> Listing:
    found = listing_of(obj)
    assert found is not None
    return found


T0, T1 = "2026-12-07T01:00:00Z", "2026-12-07T02:00:00Z"


def test_winner_listed_loser_conflicted_and_nothing_rewritten():
    old = template_object("old", "ner", created="2026-01-01T00:00:00Z")
    new = template_object("new", "ner", created="2026-02-01T00:00:00Z")
    catalogue = Catalogue.of_objects([old, new])
    won = template_status(catalogue, listing(old), None, T0)
    lost = template_status(catalogue, listing(new), None, T0)
    assert won is not None and lost is not None
    assert (won["task"], won["conditions"][0]["status"]) == ("ner", "True")
    assert lost["conditions"][0]["status"] == "False"
    assert lost["conditions"][0]["reason"] == NAME_CONFLICT
    assert newly_conflicted(None, lost) and not newly_conflicted(lost, lost)
    # Applied once, the same catalogue asks for nothing more (no patch storm, no new Event).
    assert template_status(catalogue, listing(new), lost, T1) is None


def test_the_loser_is_listed_again_when_the_winner_goes():
    new = template_object("new", "ner", created="2026-02-01T00:00:00Z")
    lost = template_status(
        Catalogue.of_objects([template_object("old", "ner"), new]),
        listing(new),
        None,
        T0,
    )
    freed = template_status(Catalogue.of_objects([new]), listing(new), lost, T1)
    assert freed is not None
    assert freed["conditions"][0]["status"] == "True"
    assert freed["conditions"][0]["lastTransitionTime"] == T1
