"""The model run's ontology, and the per-row checks a prediction import makes against it.

Labelbox checks each imported annotation against the ontology of the model run: the feature
must exist (by ``schemaId`` or ``name``), an answer must have the shape of its question's kind
(an object for a radio question, a list for a checklist), a box needs ``bbox``, an entity
``location``, and every row needs a ``uuid`` that no other row of the run already holds. Rows that
fail are reported one by one in the import's status file (``{"uuid", "dataRow", "status":
"FAILURE", "errors": [{"name", "message"}]}``, the shape ``AnnotationImport.statuses``
documents); the others are kept. Without these checks the fake would accept what Labelbox
rejects, and the trainer's handling of rejected rows could never be tested.

A test passes the ontology to ``add_model_run(ontology=...)``; otherwise it is derived from the
seeded export rows (every labelled feature and answer, with the ``feature_schema_id`` the export
carries, if any). Whether the real service upserts, duplicates or rejects a repeated ``uuid`` is
not documented; the fake rejects it, the strictest choice, so that a client that re-uploads is
caught.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RADIO = "radio"
CHECKLIST = "checklist"
TEXT = "text"
RECTANGLE = "rectangle"
NAMED_ENTITY = "named-entity"
POLYGON = "polygon"
POINT = "point"
LINE = "line"
MASK = "raster-segmentation"
# Export object keys that name a tool's kind (docs/labelbox.md §5.2), and the key it predicts.
OBJECT_KINDS = {
    "bounding_box": (RECTANGLE, "bbox"),
    "location": (NAMED_ENTITY, "location"),
    "polygon": (POLYGON, "polygon"),
    "point": (POINT, "point"),
    "line": (LINE, "line"),
    "mask": (MASK, "mask"),
}
PREDICTION_KEY = dict(OBJECT_KINDS.values())


@dataclass
class Feature:
    """A tool or a classification question of the ontology; ``options`` map answer names to
    their schema ids (``None`` where unknown)."""

    name: str
    kind: str
    schema_id: str | None = None
    options: dict[str, str | None] = field(default_factory=dict)

    def has_option(self, answer: Mapping[str, Any]) -> bool:
        schema_id, name = answer.get("schemaId"), answer.get("name")
        if schema_id is not None:
            return schema_id in self.options.values()
        return isinstance(name, str) and name in self.options


@dataclass
class Ontology:
    features: list[Feature] = field(default_factory=list)

    def find(self, row: Mapping[str, Any]) -> Feature | None:
        schema_id, name = row.get("schemaId"), row.get("name")
        for feature in self.features:
            if schema_id is not None and feature.schema_id == schema_id:
                return feature
            if schema_id is None and feature.name == name:
                return feature
        return None

    def named(self, name: Any) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    def _add(self, name: str, kind: str, schema_id: Any) -> Feature:
        feature = self.named(name)
        if feature is None:
            feature = Feature(name, kind, schema_id if isinstance(schema_id, str) else None)
            self.features.append(feature)
        return feature


def _name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("name") or raw.get("value") or "")


def _add_classification(ontology: Ontology, raw: Mapping[str, Any]) -> None:
    sid = raw.get("feature_schema_id")
    if isinstance(raw.get("radio_answer"), Mapping):
        feature = ontology._add(_name(raw), RADIO, sid)
        answers: list[Any] = [raw["radio_answer"]]
    elif isinstance(raw.get("checklist_answers"), list):
        feature = ontology._add(_name(raw), CHECKLIST, sid)
        answers = raw["checklist_answers"]
    else:
        ontology._add(_name(raw), TEXT, sid)
        return
    for answer in answers:
        if isinstance(answer, Mapping):
            answer_sid = answer.get("feature_schema_id")
            feature.options.setdefault(
                _name(answer), answer_sid if isinstance(answer_sid, str) else None
            )


def derive(rows: Iterable[Mapping[str, Any]]) -> Ontology:
    """Every feature and answer the rows' labels use, in every experiment and run."""
    ontology = Ontology()
    for row in rows:
        for experiment in (row.get("experiments") or {}).values():
            for run in ((experiment or {}).get("runs") or {}).values():
                for label in (run or {}).get("labels") or []:
                    annotations = (label or {}).get("annotations") or {}
                    for raw in annotations.get("objects") or []:
                        kind = next((k for key, (k, _) in OBJECT_KINDS.items() if key in raw), None)
                        if kind is not None:
                            ontology._add(_name(raw), kind, raw.get("feature_schema_id"))
                    for raw in annotations.get("classifications") or []:
                        if isinstance(raw, Mapping):
                            _add_classification(ontology, raw)
    return ontology


def from_json(raw: Iterable[Mapping[str, Any]]) -> Ontology:
    """An ontology from ``[{"name", "kind", "schemaId"?, "options": [{"name", "schemaId"?}]}]``."""
    out = Ontology()
    for item in raw:
        feature = Feature(str(item["name"]), str(item["kind"]), item.get("schemaId"))
        for option in item.get("options") or []:
            feature.options[str(option["name"])] = option.get("schemaId")
        out.features.append(feature)
    return out


def _error(name: str, message: str) -> dict[str, str]:
    return {"name": name, "message": message}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _answer_errors(feature: Feature, answer: Any) -> list[dict[str, str]]:
    if feature.kind == RADIO:
        if not isinstance(answer, Mapping):
            return [
                _error(
                    "InvalidAnswerShape",
                    f"radio question {feature.name!r} needs one answer object, "
                    f"got {type(answer).__name__}",
                )
            ]
        answers: list[Any] = [answer]
    elif feature.kind == CHECKLIST:
        if not isinstance(answer, list) or not answer:
            return [
                _error(
                    "InvalidAnswerShape",
                    f"checklist question {feature.name!r} needs a non-empty list of answers, "
                    f"got {type(answer).__name__}",
                )
            ]
        answers = answer
    else:
        return [
            _error("InvalidAnswerShape", f"{feature.kind} feature {feature.name!r} has no answer")
        ]
    errors = []
    for item in answers:
        if not isinstance(item, Mapping) or not feature.has_option(item):
            errors.append(
                _error("AnswerNotFound", f"{item!r} is not an option of {feature.name!r}")
            )
        elif "confidence" in item and not (
            _number(item["confidence"]) and 0 <= item["confidence"] <= 1
        ):
            errors.append(_error("InvalidConfidence", "confidence must be a number in [0, 1]"))
    return errors


def _object_errors(feature: Feature, row: Mapping[str, Any]) -> list[dict[str, str]]:
    key = PREDICTION_KEY.get(feature.kind)
    if key is None:
        return [
            _error("InvalidAnnotation", f"{feature.kind} feature {feature.name!r} takes an answer")
        ]
    value = row.get(key)
    if not isinstance(value, Mapping | list):
        return [_error("InvalidAnnotation", f"{feature.kind} {feature.name!r} needs {key!r}")]
    if key == "bbox" and not (
        isinstance(value, Mapping)
        and all(_number(value.get(k)) for k in ("top", "left", "height", "width"))
    ):
        return [_error("InvalidAnnotation", "bbox needs numeric top, left, height and width")]
    if key == "location" and not (
        isinstance(value, Mapping)
        and isinstance(value.get("start"), int)
        and isinstance(value.get("end"), int)
        and 0 <= value["start"] <= value["end"]
    ):
        return [_error("InvalidAnnotation", "location needs integer start <= end")]
    return []


def row_errors(row: Mapping[str, Any], ontology: Ontology) -> list[dict[str, str]]:
    """What Labelbox would reject in one row's content (the data row and uuid checked apart)."""
    if "metricValue" in row:
        feature = row.get("featureName")
        if feature is not None and ontology.named(feature) is None:
            return [_error("FeatureNotFound", f"metric feature {feature!r} is not in the ontology")]
        return []
    if not row.get("name") and not row.get("schemaId"):
        return [_error("MissingFeature", "annotation needs a 'name' or a 'schemaId'")]
    feature = ontology.find(row)
    if feature is None:
        ref = (
            f"schemaId {row['schemaId']!r}" if row.get("schemaId") else f"name {row.get('name')!r}"
        )
        return [_error("FeatureNotFound", f"no feature with {ref} in the model run's ontology")]
    errors: list[dict[str, str]] = []
    if "confidence" in row and not (_number(row["confidence"]) and 0 <= row["confidence"] <= 1):
        errors.append(_error("InvalidConfidence", "confidence must be a number in [0, 1]"))
    if feature.kind in (RADIO, CHECKLIST, TEXT):
        return errors + _answer_errors(feature, row.get("answer"))
    return errors + _object_errors(feature, row)
