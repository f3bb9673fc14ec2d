"""The TrainingTemplates a run is admitted against: kopf's index, confirmed on a miss.

The index is fed by a watch, so a template created a moment before its run (one `kubectl apply
-f` holding both, a chart install followed at once by a Train Model press, a test that creates
both) can still be missing from it when the run is first reconciled. A `TemplateMissing`
refusal fails the run for good, so it must not rest on a cache that is merely late: before it
stands, the namespace's templates are listed from the API server and the run is admitted
against that list. One LIST, and only on that path; a run whose template really is missing
fails exactly as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lbtrain.kube import TRAININGTEMPLATES, KubeClient
from lbtrain.resources.models import ModelRun
from lbtrain_operator import admission
from lbtrain_operator import reasons as r
from lbtrain_operator.settings import Settings

log = logging.getLogger(__name__)


async def admit(
    kube: KubeClient,
    run: ModelRun,
    run_uid: str,
    templates: admission.Templates,
    settings: Settings,
    run_body: Mapping[str, Any] | None = None,
) -> admission.Admitted | admission.Refused:
    """`admission.admit` against the index's `templates`; a `TemplateMissing` answer is
    checked against the API server's list of the run's namespace before it is returned."""
    admitted = admission.admit(run, run_uid, templates, settings, run_body)
    if not (isinstance(admitted, admission.Refused) and admitted.reason == r.TEMPLATE_MISSING):
        return admitted
    namespace = run.metadata.namespace or "default"
    live = (await kube.list(TRAININGTEMPLATES, namespace)).get("items") or []
    confirmed = admission.admit(run, run_uid, live, settings, run_body)
    if not isinstance(confirmed, admission.Refused):
        log.info(
            "ModelRun %s/%s: its TrainingTemplate was not in the watch's index yet; "
            "the API server has it",
            namespace,
            run.metadata.name,
        )
    return confirmed
