"""The signature check, as a pure function: Labelbox's exact scheme, and nothing else passes."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from lbtrain_webhook.signature import SIGNATURE_LENGTH, failure_reason, sign, verify

SECRET = b"labelbox-shared-secret"


def reference(secret: bytes, body: bytes) -> str:
    """How Labelbox's reference coordinator and test scripts compute it (docs/labelbox.md §1.3)."""
    return "sha1=" + hmac.new(secret, msg=body, digestmod=hashlib.sha1).hexdigest()


def test_sign_matches_the_reference():
    body = b'{"modelRunId": "abc", "modelType": "bounding_box"}'
    assert sign(SECRET, body) == reference(SECRET, body)
    assert len(sign(SECRET, body)) == SIGNATURE_LENGTH


def test_get_models_signs_the_empty_body():
    empty = "sha1=" + hmac.new(SECRET, digestmod=hashlib.sha1).hexdigest()
    assert verify([SECRET], b"", empty)


def test_absent_malformed_wrong_all_fail():
    body = b"{}"
    good = sign(SECRET, body)
    for header in (
        None,
        "",
        "sha1=",
        good.upper(),
        good[5:],  # the hex without its prefix
        "sha256=" + good[5:],
        good + " ",
        good[:-1],
        sign(b"other", body),
        sign(SECRET, body + b" "),
        "sha1=" + "é" * 40,
    ):
        assert not verify([SECRET], body, header), header


def test_body_whitespace_matters():
    signed = b'{"modelRunId": "a", "modelType": "ner"}'
    sent = b'{"modelRunId":"a","modelType":"ner"}'
    assert not verify([SECRET], sent, sign(SECRET, signed))


def test_several_secrets_any_matches():
    body = b"x"
    assert verify([b"old", b"new"], body, sign(b"old", body))
    assert verify([b"old", b"new"], body, sign(b"new", body))
    assert not verify([b"new"], body, sign(b"old", body))


def test_no_secret_never_verifies():
    assert not verify([], b"", sign(b"", b""))
    assert not verify([], b"", sign(b"lbtrain: no secret configured", b""))


def test_failure_reasons():
    assert failure_reason(None) == "missing"
    assert failure_reason("  ") == "missing"
    assert failure_reason("sha1=xyz") == "malformed"
    assert failure_reason(sign(b"other", b"")) == "mismatch"


@given(body=st.binary(max_size=2048), header=st.one_of(st.none(), st.text(max_size=80)))
def test_arbitrary_headers_never_crash_and_only_the_real_one_passes(body, header):
    ok = verify([SECRET], body, header)
    assert ok == (header == sign(SECRET, body))
    failure_reason(header)


@given(body=st.binary(max_size=2048), secret=st.binary(min_size=1, max_size=64))
def test_round_trip(body, secret):
    assert verify([b"unrelated", secret], body, sign(secret, body))
