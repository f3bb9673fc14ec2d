"""A kopf diff-base storage that stores nothing, because this operator has no change handlers.

kopf keeps each object's "last handled" essence so that `on.create` / `on.update` handlers can
be given a diff. lbtrain has none of those (a per-run daemon does the work; `on.delete` needs
only the deletion timestamp), yet the default storage costs, per ModelRun, one extra PATCH of
the object to write its annotation, and on every event a deep copy of the whole body, status
included (the largest single cost in a profile of the operator under load). An essence that is
always empty makes every event a no-op change for kopf, which is exactly what we need.
"""

from __future__ import annotations

from collections.abc import Iterable

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None
