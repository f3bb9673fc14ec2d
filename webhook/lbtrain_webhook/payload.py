"""The `POST /model_run` body: parsed and checked by pure functions, before anything is created.

Bad JSON or a wrong field type is a 400 (the sender is broken); a well-formed body whose values
cannot be used (an unknown model type, an id that is not a Labelbox id) is a 422. The ids must
have the shape of Labelbox's ids (:mod:`lbtrain.ids`): they become resource names, labels and
artifact paths, so nothing else is let in. Fields this webhook does not know are ignored, so a
future Labelbox field does not break the intake.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from lbtrain import ids
from lbtrain_webhook.errors import WebhookError

REQUIRED = ("modelRunId", "modelType")
OPTIONAL = ("modelId", "organizationId")
JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class ModelRunRequest:
    """What Labelbox asked for: the identity a ModelRun's spec holds."""

    model_run_id: str
    model_type: str
    model_id: str | None = None
    organization_id: str | None = None

    def spec(self) -> dict[str, str]:
        """The ModelRun spec fields, absent ones left out (the CRD has no nulls)."""
        fields = {
            "modelRunId": self.model_run_id,
            "modelType": self.model_type,
            "modelId": self.model_id,
            "organizationId": self.organization_id,
        }
        return {k: v for k, v in fields.items() if v is not None}


def is_json_content_type(header: str | None) -> bool:
    """JSON, or no Content-Type at all (Labelbox's own test scripts send none)."""
    if header is None or not header.strip():
        return True
    media = header.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def _bad(detail: str) -> WebhookError:
    return WebhookError(400, "invalid_body", detail)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _bad(f"the JSON object repeats the key {_show(key)}")
        doc[key] = value
    return doc


def _no_constants(name: str) -> Any:
    raise _bad(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: no NaN/Infinity, no repeated keys; 400 otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _bad(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # int digit limit, nesting too deep
        raise _bad(f"the body is not usable JSON: {type(exc).__name__}") from None


def _show(value: str, limit: int = 64) -> str:
    """A user-supplied string, quoted and cut short, safe to echo in an error."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return json.dumps(shown, ensure_ascii=True)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _labelbox_id(name: str, value: str) -> str:
    """An id field: valid Unicode (else 400), and a Labelbox id (else 422 naming the rule)."""
    if not _valid_unicode(value):
        raise _bad(f"field {name!r} is not valid Unicode (a lone surrogate escape)")
    if ids.is_labelbox_id(value):
        return value
    problem = "must not be empty" if not value else f"must be {ids.RULE}, not {_show(value)}"
    code = "invalid_model_run_id" if name == "modelRunId" else "invalid_field"
    raise WebhookError(422, code, f"field {name!r} {problem}")


def parse_model_run(raw: bytes) -> ModelRunRequest:
    """The request in `raw`, or a WebhookError (400 or 422) that says what is wrong."""
    doc = decode_json(raw)
    if not isinstance(doc, dict):
        raise _bad(f"the body must be a JSON object, not {_type_name(doc)}")
    values: dict[str, str | None] = {}
    for name in REQUIRED + OPTIONAL:
        value = doc.get(name)
        if value is None:
            if name in REQUIRED:
                raise _bad(f"missing required field {name!r}")
            values[name] = None
            continue
        if not isinstance(value, str):
            raise _bad(f"field {name!r} must be a string, not {_type_name(value)}")
        values[name] = value
    model_type = str(values["modelType"])
    if not _valid_unicode(model_type):  # any other value is checked against the templates
        raise _bad("field 'modelType' is not valid Unicode (a lone surrogate escape)")
    for name in ids.ID_FIELDS:
        if values[name] is not None:
            _labelbox_id(name, str(values[name]))
    return ModelRunRequest(
        str(values["modelRunId"]), model_type, values["modelId"], values["organizationId"]
    )


def _valid_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_model_type(model_type: str, known: Collection[str]) -> None:
    """422 unless `model_type` is one of `known`, byte for byte (case matters)."""
    if model_type in known:
        return
    names = sorted(known)
    listed = ", ".join(names) if names else "none: no TrainingTemplate in this namespace"
    hint = ""
    folded = [n for n in names if n.casefold() == model_type.casefold()]
    if folded:
        hint = f" (names are case-sensitive: did you mean {folded[0]!r}?)"
    raise WebhookError(
        422,
        "unknown_model_type",
        f"unknown modelType {_show(model_type)}{hint}; known model types: {listed}",
    )
