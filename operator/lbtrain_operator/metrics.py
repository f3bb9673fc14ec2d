"""Prometheus metrics of the operator, in their own registry (served by cli on --metrics-port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.active_runs = Gauge(
            "lbtrain_modelruns_active", "ModelRuns not finished, by phase", ["phase"], registry=r
        )
