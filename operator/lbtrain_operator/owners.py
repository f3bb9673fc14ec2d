"""Which ModelRun an object belongs to, read from and written as its ownerReferences: pure.

A run's Job, rendezvous Service and artifacts claim are all named after the run, so a deleted
run of the same name can leave one behind that the garbage collector has not removed yet. The
uid in an ownerReference is what tells the two runs apart; the name never does. Every step that
finds an object of the run's name asks here, so they all answer the same way, and every object
the operator creates names its run the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lbtrain.resources.names import GROUP_VERSION


def references(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The object's ownerReferences (the well-formed ones)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref for ref in refs if isinstance(ref, Mapping)]


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` belongs to the object `uid` (not to a deleted one of the same name)."""
    return any(ref.get("uid") == uid for ref in references(obj))


def other_owner(obj: Mapping[str, Any], uid: str) -> Mapping[str, Any] | None:
    """The first owner of `obj` that is not the object `uid`, if any."""
    return next((ref for ref in references(obj) if ref.get("uid") != uid), None)


def run_reference(run_name: str, run_uid: str, *, controller: bool = True) -> dict[str, Any]:
    """The ownerReference that makes the ModelRun the owner of an object it created: deleting
    the run deletes the object, and the object is not removed before the run is
    (`blockOwnerDeletion`). `controller`: the run manages it (a Job, a Service), which a
    claim's owner is not."""
    ref: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "ModelRun",
        "name": run_name,
        "uid": run_uid,
    }
    if controller:
        ref["controller"] = True
    ref["blockOwnerDeletion"] = True
    return ref
