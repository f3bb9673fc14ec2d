"""The model catalogue: one entry per TrainingTemplate, one rule for a contested name."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lbtrain.contract import MODEL_TYPES
from lbtrain.resources.catalogue import (
    NAME_CONFLICT,
    Catalogue,
    Listing,
    listing_of,
    task_for,
)


def obj(name: str, model_type: str, created: str = "2026-01-01T00:00:00Z", **spec: Any):
    return {
        "metadata": {"name": name, "creationTimestamp": created, "generation": 3, "uid": name},
        "spec": {"modelType": model_type, "image": "x", **spec},
    }


def test_the_task_defaults_to_a_known_name_case_insensitively():
    assert task_for("Text_multi_classification", None) == "text_multi_classification"
    assert task_for("ner", None) == "ner"
    assert task_for("BERT base", "text_single_classification") == "text_single_classification"
    assert task_for("my-own-detector", None) == "my-own-detector"  # a team's own trainer
    assert all(task_for(t.upper(), None) == t for t in MODEL_TYPES)


def test_several_templates_serve_one_task_under_their_own_names():
    catalogue = Catalogue.of_objects(
        [
            obj("bert", "Text classification - BERT base", task="text_single_classification"),
            obj("small", "Text classification - fast", task="text_single_classification"),
        ]
    )
    assert catalogue.models_answer() == {
        "Text classification - BERT base": {"description": ""},
        "Text classification - fast": {"description": ""},
    }
    entry = catalogue.serving("Text classification - fast")
    assert entry is not None and (entry.template, entry.generation) == ("small", 3)
    assert not catalogue.losers


def test_the_older_template_keeps_a_contested_name_and_the_loser_is_told_why():
    younger = obj("a-new", "ner", created="2026-03-01T00:00:00Z")
    older = obj("z-old", "ner", created="2026-02-01T00:00:00Z")
    catalogue = Catalogue.of_objects([younger, older])
    winner = catalogue.serving("ner")
    assert winner is not None and winner.template == "z-old"  # not the first by name
    loser = listing_of(younger)
    assert loser is not None
    listed, reason, message = catalogue.listed(loser)
    assert (listed, reason) == (False, NAME_CONFLICT)
    assert "z-old" in message and "'ner'" in message
    assert catalogue.listed(winner)[0]


def test_same_creation_second_falls_back_to_the_name():
    catalogue = Catalogue.of_objects([obj("b", "ner"), obj("a", "ner")])
    assert catalogue.serving("ner").template == "a"  # type: ignore[union-attr]


def test_objects_without_a_name_are_not_listed():
    assert listing_of({"metadata": {"name": "x"}, "spec": {}}) is None
    assert listing_of({"metadata": {}, "spec": {"modelType": "ner"}}) is None


names = st.sampled_from(["ner", "Ner", "bounding_box", "x y"])
stamps = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", ""])


@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), names, stamps), max_size=8))
def test_the_winner_does_not_depend_on_the_order_seen(items):
    listings = {
        n: Listing(template=n, labelbox_name=lb, task=task_for(lb, None), created=c)
        for n, lb, c in items
    }
    forward = Catalogue.of(listings.values())
    backward = Catalogue.of(reversed(list(listings.values())))
    assert forward == backward
    assert len(forward.entries) + len(forward.losers) == len(listings)
