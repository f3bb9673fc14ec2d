"""The operator's command-line flags, each declared once: its names, its default (or the
environment variable that overrides it), and its help.

Most flags have the same shape (a value, a default a Deployment may set from its environment,
a sentence of help); declaring them as rows of one table keeps `--help` and the parser the
same thing, and names every flag's environment variable in its help the same way. An
environment variable that is set but empty counts as unset.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lbtrain.contract import (
    DEFAULT_LABELBOX_ENDPOINT,
    DEFAULT_LABELBOX_REST_ENDPOINT,
    ENV_LABELBOX_ENDPOINT,
    ENV_LABELBOX_REST_ENDPOINT,
)

KUBERNETES = "Kubernetes"
LABELBOX = "Labelbox"
OPERATIONS = "operations"
PROGRESS = "live training progress (docs/progress.md)"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return value


class Adds(Protocol):
    """A parser or one of its argument groups."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


@dataclass(frozen=True)
class Flag:
    """One flag: `--name` (and `short`), its help, its default, which `env` overrides when set;
    `type` parses a value, `switch` makes it a flag without one, `choices` limits it."""

    group: str
    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    env: str | None = None
    switch: bool = False
    choices: Sequence[str] | None = None

    def default_now(self) -> Any:
        """The default, from the environment where `env` is set (parsed by `type` as given on
        the command line)."""
        return (os.environ.get(self.env) if self.env else None) or self.default

    def add_to(self, group: Adds) -> None:
        text = f"{self.help} (env {self.env})" if self.env else self.help
        if self.switch:
            group.add_argument(f"--{self.name}", action="store_true", help=text)
            return
        group.add_argument(
            f"--{self.name}",
            type=self.type,
            default=self.default_now(),
            choices=self.choices,
            help=text,
        )


# First in its group, ahead of the namespace flags (`cli.parser`).
KUBECONFIG = Flag(
    KUBERNETES, "kubeconfig", "kubeconfig file; in-cluster config when unset", env="KUBECONFIG"
)
FLAGS: tuple[Flag, ...] = (
    Flag(
        KUBERNETES,
        "watch-timeout",
        "seconds before the API server ends a watch and it is re-opened",
        300,
        int,
    ),
    Flag(
        LABELBOX,
        "labelbox-endpoint",
        "Labelbox GraphQL API: the operator reports to it, and trainer pods use it unless "
        "their template names another",
        DEFAULT_LABELBOX_ENDPOINT,
        env=ENV_LABELBOX_ENDPOINT,
    ),
    Flag(
        LABELBOX,
        "labelbox-rest-endpoint",
        "Labelbox REST API: the operator's Labelbox client uses it, and trainer pods unless "
        "their template names another",
        DEFAULT_LABELBOX_REST_ENDPOINT,
        env=ENV_LABELBOX_REST_ENDPOINT,
    ),
    Flag(
        LABELBOX,
        "labelbox-api-key-file",
        "file holding the API key the operator reports with (else env LABELBOX_API_KEY)",
        type=Path,
        env="LABELBOX_API_KEY_FILE",
    ),
    Flag(
        LABELBOX,
        "api-key-secret",
        "Secret (in the run's namespace, key 'api-key') that trainer pods read the API key "
        "from, unless the template names another",
        "lbtrain-labelbox",
        env="LBTRAIN_API_KEY_SECRET",
    ),
    Flag(
        LABELBOX,
        "report-backoff-max",
        "longest wait between retries of a failed Labelbox report, seconds",
        300.0,
        float,
    ),
    Flag(
        LABELBOX,
        "report-wait",
        "how long Labelbox's acknowledgement of a status may wait to be stored with the run's "
        "next status write before it is written on its own (0: at once); a phase and its "
        "Labelbox call are always stored before the call is made, seconds",
        2.0,
        non_negative_float,
    ),
    Flag(
        LABELBOX,
        "cancel-report-timeout",
        "how long deleting a ModelRun waits to tell Labelbox 'cancelled', seconds",
        60.0,
        float,
    ),
    Flag(
        OPERATIONS,
        "resync-interval",
        "re-examine each unfinished run at least this often, seconds",
        30.0,
        float,
    ),
    Flag(
        OPERATIONS,
        "max-concurrent-passes",
        "how many reconcile passes may talk to the API server at once; a burst of new runs "
        "waits its turn instead of piling requests (and memory) on the API server",
        32,
        positive_int,
    ),
    Flag(
        OPERATIONS,
        "burst-quiet",
        "while Jobs are created less than this many seconds apart (a burst of new runs), each "
        "new run's first status write and Events wait until Job creation has been quiet this "
        "long, so the burst's Jobs exist sooner (0: never wait)",
        1.0,
        non_negative_float,
    ),
    Flag(
        OPERATIONS,
        "burst-max-hold",
        "longest a new run's first status write waits for a burst to pass, seconds",
        30.0,
        non_negative_float,
    ),
    Flag(
        OPERATIONS,
        "metrics-port",
        "Prometheus metrics port (0 disables)",
        9090,
        int,
        env="LBTRAIN_METRICS_PORT",
    ),
    Flag(
        OPERATIONS,
        "liveness-port",
        "serves /healthz, which fails when watches stall (0 disables)",
        8081,
        int,
    ),
    Flag(
        OPERATIONS,
        "heartbeat-interval",
        "seconds between heartbeat Lease renewals that prove watches work",
        10.0,
        float,
    ),
    Flag(
        PROGRESS,
        "progress-port",
        "port of POST /progress, where rank 0 of each training pod reports (0: off; the chart "
        "sets 8082)",
        0,
        int,
    ),
    Flag(
        PROGRESS,
        "progress-url",
        "the URL trainer pods reach that endpoint at, e.g. the chart's Service (empty: trainer "
        "pods report no progress and get no progress token)",
        "",
        env="LBTRAIN_PROGRESS_URL",
    ),
    Flag(
        PROGRESS,
        "progress-interval",
        "least seconds between two progress updates of one run sent to Labelbox (the "
        "template's progressIntervalSeconds paces the trainer's reports)",
        5.0,
        non_negative_float,
    ),
    Flag(
        OPERATIONS,
        "default-queue",
        "Kueue LocalQueue for runs whose ModelRun and TrainingTemplate name no queueName "
        "(empty: such runs are not queued)",
        "",
        env="LBTRAIN_DEFAULT_QUEUE",
    ),
    Flag(
        OPERATIONS,
        "no-restricted-pods",
        "do not apply the restricted security context to trainer pods",
        switch=True,
    ),
    Flag(OPERATIONS, "log-level", "Python logging level", "INFO", env="LBTRAIN_LOG_LEVEL"),
    Flag(
        OPERATIONS,
        "log-format",
        "json: one JSON object a line; text: for people",
        "json",
        choices=("json", "text"),
    ),
)


def add_all(groups: Mapping[str, Adds], flags: Sequence[Flag] = FLAGS) -> None:
    """Add each flag to its group of the parser, in the table's order."""
    for flag in flags:
        flag.add_to(groups[flag.group])
