"""ModelRun names from modelRunIds: deterministic, always valid, readable where possible."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from lbtrain.resources.names import is_label_value, label_value
from lbtrain_webhook.naming import is_dns_label, model_run_name, short_hash

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_labelbox_ids_are_their_own_names():
    for mr_id in ("clr8x6y0a00013b6z9k2f7h1e", "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4"):
        assert model_run_name(mr_id) == mr_id


def test_other_ids_are_derived():
    upper = "9B2F7C1E-3D4A-4B5C-8D6E-7F8091A2B3C4"
    assert model_run_name(upper) == f"mr-{upper.lower()}-{short_hash(upper)}"
    assert model_run_name("Run #1") == f"mr-run-1-{short_hash('Run #1')}"
    assert model_run_name("!!!") == f"mr-{short_hash('!!!')}"
    assert model_run_name("ünïcödé") == f"mr-n-c-d-{short_hash('ünïcödé')}"


def test_case_variants_do_not_collide():
    assert model_run_name("ABC") != model_run_name("abc") != model_run_name("Abc")


def test_long_ids_fit():
    name = model_run_name("a" * 128)
    assert len(name) <= 63
    assert is_dns_label(name)


@given(st.text(min_size=1, max_size=128))
def test_every_id_gets_a_valid_deterministic_name(mr_id):
    name = model_run_name(mr_id)
    assert DNS_LABEL.fullmatch(name)
    assert len(name) <= 63
    assert name == model_run_name(mr_id)
    if not is_dns_label(mr_id):
        assert name.startswith("mr-")
        assert name.endswith(short_hash(mr_id))


@given(st.text(max_size=200))
def test_label_values_are_always_valid(value):
    assert is_label_value(label_value(value))


def test_label_value_keeps_valid_values_exactly():
    assert label_value("Text_multi_classification") == "Text_multi_classification"
    assert label_value("My model") == "My_model"
