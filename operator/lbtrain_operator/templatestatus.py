"""TrainingTemplate status: each template's Labelbox task and whether the catalogue lists it
(`Listed`), brought in line with the catalogue whenever a template of the namespace changes.

Which template the catalogue lists under a Labelbox name, and what its status must say, are
pure decisions of `lbtrain.resources.catalogue` and `listing`; this module only writes the
status subresource and posts the Warning Event of a template that newly lost its name.
"""

from __future__ import annotations

import logging

from lbtrain.kube import TRAININGTEMPLATES, NotFound
from lbtrain.resources.catalogue import NAME_CONFLICT, Catalogue, listing_of
from lbtrain.timestamps import iso
from lbtrain_operator import events, listing
from lbtrain_operator.admission import Templates
from lbtrain_operator.context import Context, utcnow

log = logging.getLogger("lbtrain.operator")


async def list_templates(ctx: Context, namespace: str, templates: Templates) -> None:
    """Bring each TrainingTemplate's status (task, `Listed`) in line with the catalogue, with a
    Warning on a template that newly lost its Labelbox name. One namespace at a time: each
    template's change recomputes all of them (a deleted winner frees its loser)."""
    catalogue = Catalogue.of_objects(templates)
    by_name = {t["metadata"]["name"]: t for t in templates}
    async with ctx.listing_lock(namespace):
        present = {(namespace, name, t["metadata"].get("uid", "")) for name, t in by_name.items()}
        for gone in [k for k in ctx.listed if k[0] == namespace and k not in present]:
            del ctx.listed[gone]
        for item in map(listing_of, templates):
            if item is None:
                continue
            body = by_name[item.template]
            key = (namespace, item.template, item.uid)
            current = ctx.listed.get(key, body.get("status"))
            wanted = listing.template_status(catalogue, item, current, iso(utcnow()))
            if wanted is None:
                continue
            try:
                await ctx.kube.patch(
                    TRAININGTEMPLATES,
                    item.template,
                    {"status": wanted},
                    namespace,
                    subresource="status",
                    decode=False,
                )
            except NotFound:
                continue
            ctx.listed[key] = wanted
            if listing.newly_conflicted(current, wanted):
                message = wanted["conditions"][0]["message"]
                event = events.event_body(body, "Warning", NAME_CONFLICT, message, utcnow())
                await events.post(ctx.kube, event)
                log.warning(
                    "TrainingTemplate not listed: another one has its Labelbox name",
                    extra={
                        "template": f"{namespace}/{item.template}",
                        "model_type": item.labelbox_name,
                    },
                )
