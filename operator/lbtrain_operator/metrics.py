"""Prometheus metrics of the operator, in their own registry (served by cli on --metrics-port).

The chart's PrometheusRule and Grafana dashboard query these names; tests/helm/test_ops_kit.py
checks every name they use against this registry, so a rename here fails there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lbtrain.resources.models import Phase

# The phases lbtrain_modelruns_active counts runs in (a finished run is counted nowhere).
ACTIVE_PHASES = tuple(phase for phase in Phase if not phase.finished)
_SLOW = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.transitions = Counter(
            "lbtrain_modelrun_transitions_total",
            "ModelRun phase transitions, by new phase and reason",
            ["phase", "reason"],
            registry=r,
        )
        self.finished = Counter(
            "lbtrain_modelruns_finished_total",
            "ModelRuns that ended, by phase and reason",
            ["phase", "reason"],
            registry=r,
        )
        self.time_to_job = Histogram(
            "lbtrain_time_to_job_seconds",
            "ModelRun creation to Job creation",
            buckets=_SLOW,
            registry=r,
        )
        self.time_to_running = Histogram(
            "lbtrain_time_to_running_seconds",
            "ModelRun creation to the first stage running",
            buckets=_SLOW,
            registry=r,
        )
        self.report_latency = Histogram(
            "lbtrain_labelbox_report_seconds",
            "Latency of Labelbox status updates",
            ["outcome"],
            buckets=_SLOW,
            registry=r,
        )
        self.report_failures = Counter(
            "lbtrain_labelbox_report_failures_total",
            "Labelbox status updates that failed",
            registry=r,
        )
        self.backlog = Gauge(
            "lbtrain_labelbox_backlog",
            "ModelRuns with Labelbox statuses not yet acknowledged",
            registry=r,
        )
        self.progress_reports = Counter(
            "lbtrain_progress_reports_total",
            "Live progress reports of trainer pods, by result (Accepted or the refusal reason)",
            ["result"],
            registry=r,
        )
        self.active_runs = Gauge(
            "lbtrain_modelruns_active", "ModelRuns not finished, by phase", ["phase"], registry=r
        )
        for phase in ACTIVE_PHASES:  # every phase is a series from the start, 0 until used
            self.active_runs.labels(phase.value)
        # The phase each unfinished run is counted under (`count_active`).
        self._active: dict[tuple[str, str], Phase] = {}

    def count_active(self, key: tuple[str, str], phase: Phase | None) -> None:
        """Count the run `key` under `phase` in lbtrain_modelruns_active (None, or a finished
        phase: count it nowhere). Only the two series that change are touched: one call per
        pass costs the same at a thousand runs as at one."""
        old = self._active.pop(key, None)
        new = phase if phase is not None and not phase.finished else None
        if new is not None:
            self._active[key] = new
        if old == new:
            return
        if old is not None:
            self.active_runs.labels(old.value).dec()
        if new is not None:
            self.active_runs.labels(new.value).inc()
