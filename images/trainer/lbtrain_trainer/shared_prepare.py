"""Export and prepare once per run of several pods; the other pods, and every retry, reuse it.

A run of M pods is one Indexed Job whose every pod runs the ``export`` and ``prepare`` init
containers: without this module, M exports of the same rows from Labelbox (M times the API
calls, the media downloads and the split write-back), and a retried attempt (a new Job) does it
all again. Kubeflow Trainer answers this with a dataset initializer that fills a shared volume
before the trainers start. lbtrain's pods already share the artifact destination (admission
refuses a multi-pod run whose destination is not shared), so pod index 0 is the initializer:

- **Pod 0** exports and prepares as a one-pod run does, then publishes everything ``train``
  reads as one bundle to the destination, and last a marker with the bundle's size and sha256.
- **Pods 1..M-1** never call Labelbox: their ``export`` waits for the marker (polling, logging
  what it waits for; pod 0's failure fails the Job, and SIGTERM ends the wait at once), then
  downloads the bundle, checks it against the marker and unpacks it into the workspace; their
  ``prepare`` finds the workspace prepared and does nothing but report it.
- **A retry**: pod 0's ``export`` finds a valid bundle of this run and unpacks it instead of
  exporting. A marker that is missing, another run's, or whose bundle's size or sha256 differ
  (a torn upload, a tampered file) is not used: pod 0 exports again and overwrites it.

What the bundle holds and how it is checked: :mod:`lbtrain_trainer.bundle`. The marker's key is a
hash of the ModelRun's uid, the model run id, the model type and the operator's
hyperparameters, so a retry of the same ModelRun matches and another run sharing the
destination never does. A run of one pod (no completion index, or one node) keeps exactly
the stages it had: nothing is published.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lbtrain_trainer import artifacts, bundle
from lbtrain_trainer.bundle import BUNDLE, MARKER, Problem
from lbtrain_trainer.redact import redact
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)

POLL_S: Final = 3.0  # how often a waiting pod looks for the marker
LOG_EVERY_S: Final = 30.0  # how often it says it still waits (and at every change of reason)

# A waiting pod's reason to look again (paired with its message), beside bundle's own.
READ_FAILED: Final = "ReadFailed"
MSG_READ_FAILED: Final = "reading it failed ({error}); trying again"
# Errors that a retry cannot fix: a bug in this trainer, not a store that hiccuped. Pod 0 is
# healthy and waits for this pod in the rendezvous, so a wait that swallowed them would hang
# the run until the rendezvous timed out.
PROGRAMMING_ERRORS: Final = (TypeError, AttributeError, NameError, ImportError, AssertionError)


@dataclass(frozen=True)
class Role:
    """This pod's place in a run of several pods."""

    index: int
    nodes: int

    @property
    def leader(self) -> bool:
        """Pod 0 exports, prepares and publishes."""
        return self.index == 0


def role_of(num_nodes: int, completion_index: int | None) -> Role | None:
    """None for a run of one pod (the stages run as they always did)."""
    if num_nodes <= 1 or completion_index is None:
        return None
    return Role(completion_index, num_nodes)


def settings_key(settings: Settings) -> str:
    """The key of this run's bundle (:func:`bundle.bundle_key`)."""
    return bundle.bundle_key(
        settings.run_uid, settings.model_run_id, settings.model_type, settings.hyperparameters
    )


def wait_for_bundle(
    settings: Settings,
    ws: Workspace,
    dest: artifacts.Destination,
    role: Role,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until pod 0's bundle is published and unpacked here. No timeout: pod 0's failure
    fails the whole Job, whose pods the kubelet then stops (SIGTERM ends the sleep). A failed
    read is logged and tried again: the wait may last the whole export, and a destination that
    stays unreadable fails pod 0, and with it the Job, anyway."""
    started = clock()
    said: tuple[str, float] | None = None
    while True:
        try:
            marker, problem = bundle.try_fetch(ws, dest, settings_key(settings))
        except PROGRAMMING_ERRORS:
            raise  # not the store's: waiting would hide it while pod 0 waits for this pod
        except Exception as exc:  # the store's hiccup: pod 0 fails the Job if it lasts
            marker, problem = None, Problem(READ_FAILED, MSG_READ_FAILED.format(error=exc))
        if marker is not None:
            return marker
        assert problem is not None
        now = clock()
        if said is None or said[0] != problem.reason or now - said[1] >= LOG_EVERY_S:
            log.info(
                "pod %d of %d: waiting for pod 0 to publish the prepared data at %s: %s "
                "(%.0fs so far)",
                role.index,
                role.nodes,
                dest.shown(MARKER),
                redact(problem.message),
                now - started,
            )
            said = (problem.reason, now)
        sleep(POLL_S)


def reuse_for_export(settings: Settings, ws: Workspace) -> dict[str, Any] | None:
    """The export stage's summary when this pod takes the published bundle instead of
    exporting; None when it exports as usual (one pod, or pod 0 finding nothing usable)."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None:
        return None
    dest = artifacts.Destination(settings.artifact_destination)
    started = time.monotonic()
    if role.leader:
        marker, problem = bundle.try_fetch(ws, dest, settings_key(settings))
        if marker is None:
            assert problem is not None
            ws.bundle_marker_file.unlink(missing_ok=True)  # this workspace is prepared anew
            log.info("pod 0: %s (%s): exporting from Labelbox", problem.message, dest.shown(MARKER))
            return None
        log.info("pod 0: reusing the data an earlier attempt prepared (%s)", dest.shown(BUNDLE))
    else:
        wait_for_bundle(settings, ws, dest, role)
        log.info("pod %d: unpacked pod 0's prepared data (%s)", role.index, dest.shown(BUNDLE))
    exported: dict[str, Any] = {}
    if ws.export_summary_file.is_file():
        exported = json.loads(ws.export_summary_file.read_text())
    return {
        **exported,
        "stage": "export",
        "reused": dest.shown(BUNDLE),
        "completion_index": role.index,
        "waited_s": round(time.monotonic() - started, 1),
    }


def exported(settings: Settings, ws: Workspace, summary: Mapping[str, Any]) -> None:
    """Keep the export stage's summary for the bundle (a pod that reuses it reports it)."""
    if role_of(settings.num_nodes, settings.completion_index) is not None:
        ws.export_summary_file.write_text(json.dumps(dict(summary)))


def reuse_for_prepare(settings: Settings, ws: Workspace) -> dict[str, Any] | None:
    """The prepare stage's summary when the workspace was unpacked from a bundle (nothing to
    do); None when it prepares as usual."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None or not ws.bundle_marker_file.is_file():
        return None
    prepared: dict[str, Any] = {}
    if ws.prepare_summary_file.is_file():
        prepared = json.loads(ws.prepare_summary_file.read_text())
    marker = json.loads(ws.bundle_marker_file.read_text())
    log.info("pod %d: the workspace holds pod 0's prepared data: nothing to prepare", role.index)
    return {**prepared, "stage": "prepare", "reused": marker.get("bundle", BUNDLE)}


def prepared(settings: Settings, ws: Workspace, summary: Mapping[str, Any]) -> None:
    """After pod 0 prepared: publish the bundle for the other pods and for retries."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None or not role.leader:
        return
    ws.prepare_summary_file.write_text(json.dumps(dict(summary)))
    dest = artifacts.Destination(settings.artifact_destination)
    bundle.publish(ws, dest, settings_key(settings), settings.model_run_id)
