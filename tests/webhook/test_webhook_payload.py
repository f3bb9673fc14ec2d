"""The POST /model_run body parser, as a pure function: 400 for broken input, 422 for unusable
values, a ModelRunRequest otherwise, and nothing else, whatever the bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbtrain.ids import is_labelbox_id
from lbtrain_webhook.errors import WebhookError
from lbtrain_webhook.payload import (
    ModelRunRequest,
    check_model_type,
    is_json_content_type,
    parse_model_run,
)


def status_of(raw: bytes) -> int:
    try:
        parse_model_run(raw)
    except WebhookError as exc:
        return exc.status
    return 200


RUN = "ckx0run000000000000000001"  # a cuid
MODEL = "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4"  # a UUID
ORG = "cjhfn5y6s0pk507024nz1ocys"


def test_full_body():
    raw = json.dumps(
        {"modelRunId": RUN, "modelType": "ner", "modelId": MODEL, "organizationId": ORG}
    ).encode()
    assert parse_model_run(raw) == ModelRunRequest(RUN, "ner", MODEL, ORG)


def test_reference_body_without_optional_fields():
    # Labelbox's reference test script sends only these two fields (docs/labelbox.md §1.4).
    raw = json.dumps({"modelRunId": MODEL, "modelType": "bounding_box"}).encode()
    req = parse_model_run(raw)
    assert req.model_id is None
    assert req.organization_id is None
    assert req.spec() == {"modelRunId": MODEL, "modelType": "bounding_box"}


def test_nulls_are_absent_and_unknown_fields_ignored():
    raw = b'{"modelRunId":"ckx0run000000000000000001","modelType":"ner","modelId":null,"x":[1]}'
    assert parse_model_run(raw) == ModelRunRequest(RUN, "ner")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'"a string"',
        b"null",
        b"{",
        b'{"modelType":"ner"}',
        b'{"modelRunId":"a"}',
        b'{"modelRunId":1,"modelType":"ner"}',
        b'{"modelRunId":"a","modelType":["ner"]}',
        b'{"modelRunId":"a","modelType":"ner","modelId":5}',
        b'{"modelRunId":"a","modelType":"ner","organizationId":true}',
        b'{"modelRunId":"a","modelRunId":"b","modelType":"ner"}',
        b'{"modelRunId":"a","modelType":"ner","x":NaN}',
        b'{"modelRunId":"\\ud800","modelType":"ner"}',
        b"\xff\xfe{}",
        b'\xef\xbb\xbf{"modelRunId":"a","modelType":"ner"}',
        b"[" * 100_000,
        b'{"x":' + b"1" * 5000 + b"}",
    ],
)
def test_broken_bodies_are_400(raw):
    assert status_of(raw) == 400


@pytest.mark.parametrize(
    "doc",
    [
        {"modelRunId": "", "modelType": "ner"},
        {"modelRunId": "a" * 129, "modelType": "ner"},
        {"modelRunId": "a\nb", "modelType": "ner"},
        {"modelRunId": "a\x00", "modelType": "ner"},
        {"modelRunId": "../../etc/passwd", "modelType": "ner"},
        {"modelRunId": "ünï-çødé-✓", "modelType": "ner"},
        {"modelRunId": RUN, "modelType": "ner", "modelId": "m" * 129},
        {"modelRunId": RUN, "modelType": "ner", "modelId": "モデル"},
        {"modelRunId": RUN, "modelType": "ner", "organizationId": "o\tx"},
        {"modelRunId": RUN, "modelType": "ner", "organizationId": "Ørg"},
    ],
)
def test_ids_that_are_not_labelbox_ids_are_422(doc):
    assert status_of(json.dumps(doc).encode()) == 422


def test_an_id_that_is_not_a_labelbox_id_says_what_is_allowed():
    with pytest.raises(WebhookError) as info:
        parse_model_run(b'{"modelRunId":"../../etc/passwd","modelType":"ner"}')
    assert info.value.error == "invalid_model_run_id"
    assert info.value.detail == (
        "field 'modelRunId' must be a Labelbox id: a cuid (a lowercase letter, then 19 to 31 "
        'lowercase letters or digits) or a UUID (8-4-4-4-12 hexadecimal digits), not "../../etc/passwd"'
    )
    with pytest.raises(WebhookError) as info:
        parse_model_run(b'{"modelRunId":"","modelType":"ner"}')
    assert (info.value.error, info.value.detail) == (
        "invalid_model_run_id",
        "field 'modelRunId' must not be empty",
    )


@pytest.mark.parametrize(
    "value",
    [
        RUN,
        ORG,
        "c" + "0" * 19,  # the shortest cuid2
        "c" + "z" * 31,  # the longest
        MODEL,
        MODEL.upper(),
    ],
)
def test_labelbox_ids_are_kept_exactly(value):
    doc = {"modelRunId": value, "modelType": "ner", "modelId": value, "organizationId": value}
    req = parse_model_run(json.dumps(doc).encode())
    assert (req.model_run_id, req.model_id, req.organization_id) == (value, value, value)


def test_model_type_is_matched_byte_for_byte():
    known = {"Text_multi_classification", "ner"}
    check_model_type("Text_multi_classification", known)
    with pytest.raises(WebhookError) as info:
        check_model_type("text_multi_classification", known)
    assert info.value.status == 422
    assert "Text_multi_classification" in info.value.detail
    assert "case" in info.value.detail
    with pytest.raises(WebhookError) as info:
        check_model_type("x", set())
    assert "no TrainingTemplate" in info.value.detail


def test_content_types():
    for ok in (
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.labelbox+json",
    ):
        assert is_json_content_type(ok), ok
    for bad in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
    ):
        assert not is_json_content_type(bad), bad


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(["modelRunId", "modelType", "modelId", "organizationId", "other"])


@given(st.binary(max_size=4096))
def test_any_bytes_give_400_422_or_a_request(raw):
    assert status_of(raw) in (200, 400, 422)


@given(st.dictionaries(fields, json_values | st.text(max_size=200), max_size=5))
def test_any_object_gives_400_422_or_a_request(doc):
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    status = status_of(raw)
    assert status in (200, 400, 422)
    if status == 200:
        req = parse_model_run(raw)
        assert req.model_run_id == doc["modelRunId"]
        assert req.model_type == doc["modelType"]
        assert all(
            is_labelbox_id(v) for v in (req.model_run_id, req.model_id, req.organization_id) if v
        )
