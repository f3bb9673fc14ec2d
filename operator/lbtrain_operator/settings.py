"""The operator's configuration: one frozen object, built from flags and environment by cli."""

from __future__ import annotations

from dataclasses import dataclass

from lbtrain.contract import DEFAULT_LABELBOX_ENDPOINT, DEFAULT_LABELBOX_REST_ENDPOINT


@dataclass(frozen=True)
class Settings:
    # Labelbox, as the operator reports to it and as trainer pods reach it.
    labelbox_endpoint: str = DEFAULT_LABELBOX_ENDPOINT
    labelbox_rest_endpoint: str = DEFAULT_LABELBOX_REST_ENDPOINT
    # The Secret (in the run's namespace) holding the API key trainer pods use, unless the
    # template names its own.
    api_key_secret_name: str = "lbtrain-labelbox"
    api_key_secret_key: str = "api-key"
    # Outbox: capped exponential backoff between failed reports.
    report_backoff_initial_s: float = 2.0
    report_backoff_max_s: float = 300.0
    # How long Labelbox's acknowledgement of a non-final status may wait to ride on the run's
    # next status write before it is written on its own (0: at once). See delivery.py.
    report_wait_s: float = 2.0
    # Deleting a running ModelRun: how long the finalizer tries to tell Labelbox "cancelled".
    cancel_report_timeout_s: float = 60.0
    # How often a run is re-examined when no pod or Job event arrives.
    resync_interval_s: float = 30.0
    # How many reconcile passes may talk to the API server at once.
    max_concurrent_passes: int = 32
    # During a burst of new runs, a run's first status write (and its Events) waits until no
    # Job was created for this long, at most burst_max_hold_s (burst.py; 0 never holds).
    burst_quiet_s: float = 1.0
    burst_max_hold_s: float = 30.0
    # The Kueue LocalQueue of runs whose ModelRun and template name none ("": no queueing).
    default_queue: str = ""
    # Security context applied to trainer pods when the template sets none.
    restricted_pods: bool = True
    # Live training progress (docs/progress.md): the URL trainer pods POST reports to (empty:
    # they report nothing, and get no progress token), and the least seconds between two
    # progress updates of one run sent to Labelbox (a guard against a flood).
    progress_url: str = ""
    progress_interval_s: float = 5.0
