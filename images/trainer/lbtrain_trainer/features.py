"""Feature schema ids: predictions name a feature by ``schemaId`` when the export gives one.

An export names each tool, classification and answer by ``name`` (and ``value``) *and* by
``feature_schema_id``. Names are ambiguous (an option's label may differ from its value, a tool
and a question may share a name), which schema ids are not, so the upload names a feature and
its answers by ``schemaId`` wherever the export carried one for that name, and by ``name``
otherwise (a name the export gave two schema ids stays a name). Model types keep writing rows
by name; :func:`apply` rewrites them just before the upload, whatever the type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Table = dict[str, Any]  # {"features": {name: id}, "answers": {feature name: {answer: id}}}


def _name(raw: Mapping[str, Any]) -> str:
    return str(raw.get("name") or raw.get("value") or "")


def _note(seen: dict[str, set[str]], name: str, schema_id: Any) -> None:
    if name and isinstance(schema_id, str) and schema_id:
        seen.setdefault(name, set()).add(schema_id)


def _labels(row: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for experiment in (row.get("experiments") or {}).values():
        for run in ((experiment or {}).get("runs") or {}).values():
            for label in (run or {}).get("labels") or []:
                if isinstance(label, Mapping):
                    yield label


class Collector:
    """The feature table of rows seen one at a time (:func:`collect` of a stream that is also
    read for something else: the export fetches media while the rows arrive)."""

    def __init__(self) -> None:
        self._features: dict[str, set[str]] = {}
        self._answers: dict[str, dict[str, set[str]]] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        for label in _labels(row):
            annotations = label.get("annotations") or {}
            for raw in annotations.get("objects") or []:
                if isinstance(raw, Mapping):
                    _note(self._features, _name(raw), raw.get("feature_schema_id"))
            for raw in annotations.get("classifications") or []:
                if not isinstance(raw, Mapping):
                    continue
                name = _name(raw)
                _note(self._features, name, raw.get("feature_schema_id"))
                chosen = raw.get("checklist_answers") or [raw.get("radio_answer")]
                for answer in chosen if isinstance(chosen, list) else []:
                    if isinstance(answer, Mapping):
                        _note(
                            self._answers.setdefault(name, {}),
                            _name(answer),
                            answer.get("feature_schema_id"),
                        )

    def table(self) -> Table:
        """The unambiguous name → schema id pairs seen so far."""
        return {
            "features": {k: next(iter(v)) for k, v in self._features.items() if len(v) == 1},
            "answers": {
                q: {k: next(iter(v)) for k, v in opts.items() if len(v) == 1}
                for q, opts in self._answers.items()
            },
        }


def collect(rows: Iterable[Mapping[str, Any]]) -> Table:
    """The unambiguous name → schema id pairs of every feature and answer in the rows' labels."""
    collector = Collector()
    for row in rows:
        collector.add(row)
    return collector.table()


def _answer(answer: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(answer, Mapping) and answer.get("name") in ids:
        out = {k: v for k, v in answer.items() if k != "name"}
        out["schemaId"] = ids[answer["name"]]
        return out
    return answer


def apply(rows: Sequence[Mapping[str, Any]], table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows with ``name`` replaced by ``schemaId`` where the table knows it (metric rows,
    which Labelbox matches by ``featureName``, are left as they are)."""
    features: Mapping[str, str] = table.get("features") or {}
    answers: Mapping[str, Mapping[str, str]] = table.get("answers") or {}
    out: list[dict[str, Any]] = []
    for row in rows:
        copy = dict(row)
        name = copy.get("name")
        if "metricValue" not in copy and isinstance(name, str) and name in features:
            del copy["name"]
            copy["schemaId"] = features[name]
            ids = answers.get(name) or {}
            if isinstance(copy.get("answer"), list):
                copy["answer"] = [_answer(a, ids) for a in copy["answer"]]
            elif "answer" in copy:
                copy["answer"] = _answer(copy["answer"], ids)
        out.append(copy)
    return out
