"""Property tests through the real app and API server: whatever arrives, the answer is JSON and
never a 5xx other than 503; a failed signature is always the same 401. Most examples run on the
pure functions (test_webhook_signature.py, test_webhook_payload.py); these are fewer and end to end.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtrain_webhook.signature import sign

from .helpers import SECRET, SEED_TYPES

pytestmark = pytest.mark.testbed

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ids = (
    st.text(max_size=40)
    | st.from_regex(r"[a-z][a-z0-9]{19,31}", fullmatch=True)  # a cuid, see lbtrain.ids
    | st.uuids().map(str)
)
json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
field_values = ids | json_leaf | st.lists(json_leaf, max_size=3)
documents = st.fixed_dictionaries(
    {},
    optional={
        "modelRunId": field_values,
        "modelType": st.sampled_from(sorted(SEED_TYPES)) | field_values,
        "modelId": field_values,
        "organizationId": field_values,
        "extra": json_leaf,
    },
)
bodies = st.binary(max_size=300) | documents.map(
    lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")
)
content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-json"])


def headers_for(body: bytes, signed: bool, content_type: str | None) -> dict[str, str]:
    headers = {"X-Hub-Signature": sign(SECRET.encode(), body)} if signed else {}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


@FUZZ
@given(body=bodies, signed=st.booleans(), content_type=content_types)
async def test_no_body_gets_a_5xx(client: Any, body: bytes, signed: bool, content_type: str | None):
    resp = await client.post(
        "/model_run",
        data=body,
        headers=headers_for(body, signed, content_type),
        skip_auto_headers=["Content-Type"],
    )
    text = await resp.text()
    assert resp.status in (200, 201, 400, 401, 409, 415, 422), text
    doc = json.loads(text)
    if resp.status >= 400:
        assert set(doc) == {"error", "detail"}
    if not signed:
        assert resp.status == 401
    assert SECRET not in text


@FUZZ
@given(header=st.text(max_size=60) | st.from_regex(r"sha1=[0-9a-f]{40}", fullmatch=True))
async def test_no_header_gets_past_the_signature(client: Any, header: str):
    try:
        resp = await client.get("/models", headers={"X-Hub-Signature": header})
    except ValueError:  # the HTTP client itself refuses the header (newlines...): not our input
        return
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
