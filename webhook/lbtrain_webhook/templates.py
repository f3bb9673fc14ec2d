"""The TrainingTemplates of the webhook's namespace, kept in memory by a list + watch
(`lbtrain.kube.reflector`), as the model catalogue (`lbtrain.resources.catalogue`).

`GET /models` is answered from here with no API call: the answer is rendered once per change.
A new ModelRun records the template that serves its name here, so the operator builds its Job
from the very template Labelbox listed. Until the first list succeeds the cache is not `synced`
and the webhook is not ready; after that a disconnection keeps serving the last known templates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbtrain.kube import TRAININGTEMPLATES, KubeClient
from lbtrain.kube.reflector import Reflector
from lbtrain.logs import get_logger
from lbtrain.resources.catalogue import Catalogue, Listing, listing_of

log = get_logger("lbtrain.webhook.templates")


class TemplateCache:
    """Watch-backed catalogue of the namespace's TrainingTemplates."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        watch_timeout_seconds: int = 240,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        on_change: Callable[[TemplateCache], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._listings: dict[str, Listing] = {}
        self._catalogue = Catalogue()
        self._body = b"{}"
        self._reflector = Reflector(
            kube,
            TRAININGTEMPLATES,
            namespace,
            on_list=self._replace,
            on_event=self.apply,
            on_state=self._state_changed,
            watch_timeout_s=watch_timeout_seconds,
            backoff_initial_s=backoff_initial,
            backoff_max_s=backoff_max,
        )

    # --- reading ---------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._reflector.synced.is_set()

    @property
    def connected(self) -> bool:
        return self._reflector.connected

    @property
    def last_error(self) -> str | None:
        return self._reflector.last_error

    @property
    def ready(self) -> bool:
        return self.synced and self.connected

    def models(self) -> dict[str, dict[str, str]]:
        return self._catalogue.models_answer()

    def body(self) -> bytes:
        """The `GET /models` answer, already rendered."""
        return self._body

    def known_types(self) -> frozenset[str]:
        """The Labelbox names listed now."""
        return self._catalogue.names()

    def serving(self, labelbox_name: str) -> Listing | None:
        """The template Labelbox lists under `labelbox_name`."""
        return self._catalogue.serving(labelbox_name)

    def __len__(self) -> int:
        return len(self._listings)

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(self._reflector.synced.wait(), timeout)

    # --- keeping it current ---------------------------------------------------------------------
    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED) to the cache."""
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        listing = listing_of(obj)
        if event_type == "DELETED" or listing is None:
            self._listings.pop(name, None)
        else:
            self._listings[name] = listing
        self._changed()

    def _replace(self, items: Sequence[Mapping[str, Any]]) -> None:
        listings = (listing_of(item) for item in items)
        self._listings = {item.template: item for item in listings if item is not None}
        self._changed()

    def _changed(self) -> None:
        catalogue = Catalogue.of(self._listings.values())
        if catalogue.entries != self._catalogue.entries:
            for loser, winner in catalogue.losers.items():
                log.warning(
                    "two TrainingTemplates claim one Labelbox name; the older is listed",
                    extra={
                        "model_type": winner.labelbox_name,
                        "listed": winner.template,
                        "not_listed": loser,
                    },
                )
            self._body = json.dumps(catalogue.models_answer(), ensure_ascii=False).encode()
            log.info("model catalogue changed", extra={"model_types": sorted(catalogue.entries)})
        self._catalogue = catalogue
        self._state_changed()

    def _state_changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    async def relist(self) -> None:
        await self._reflector.relist()

    async def run(self) -> None:
        """List and watch until cancelled; never raises anything else."""
        await self._reflector.run()
