"""The write-ahead protocol that keeps Labelbox's timeline in order across operator crashes.

The unit tests pin each rule of `delivery`; the property test runs a run's whole life through
the real `runstatus.fold` and `delivery.deliver`, with the API server and Labelbox replaced by
in-memory ones that can crash the operator at every single step (before or after a write lands,
before or after Labelbox takes a call), and checks the guarantee of docs/operator.md
("Restarts") on everything Labelbox received.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtrain.resources.models import LabelboxStatus as S
from lbtrain.resources.models import Phase
from lbtrain.resources.status import ModelRunStatus, replacing
from lbtrain_operator import delivery, outbox, progress, runstatus
from lbtrain_operator import reasons as r
from lbtrain_operator.delivery import RunState, Send, Store
from lbtrain_operator.podstate import Observation

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def queued(*statuses: S, meta: dict[str, Any] | None = None) -> ModelRunStatus:
    box = outbox.enqueue(outbox.Outbox(), list(statuses), meta or {"job": "j"}, None)
    return ModelRunStatus(phase=Phase.EXPORTING, labelbox=box)


# --- the rules, one by one ---------------------------------------------------------------------


def test_a_call_is_stored_ahead_before_it_is_made() -> None:
    status = queued(S.EXPORTING_DATA, S.PREPARING_DATA)
    step = delivery.next_step(status.labelbox, ModelRunStatus().labelbox, T0)
    assert isinstance(step, Store)
    assert step.box.sending is not None and step.box.sending.status is S.EXPORTING_DATA
    assert step.box.pending == [S.PREPARING_DATA]
    # Stored only in memory (its write failed): still not sent.
    assert isinstance(delivery.next_step(step.box, status.labelbox, T0), Store)
    # Stored: now, and only now, the call.
    sent = delivery.next_step(step.box, step.box, T0)
    assert isinstance(sent, Send) and sent.report.status is S.EXPORTING_DATA


def test_the_call_in_flight_is_repeated_word_for_word_after_a_failure() -> None:
    status = queued(S.FAILED, meta={"reason": "OOMKilled"})
    box = outbox.enqueue(status.labelbox, [], {"reason": "OOMKilled"}, "OOMKilled: 1Gi")
    first = delivery.next_step(box, box, T0)
    assert isinstance(first, Store)
    box = first.box
    box = outbox.failed(box, "503", T0, initial=2, cap=300)
    assert delivery.next_step(box, box, T0 + dt.timedelta(seconds=1)) is None  # backing off
    # The run's metadata moves on meanwhile (a later pass): the call in flight does not.
    box = outbox.enqueue(box, [], {"reason": "newer metadata"}, "newer error")
    again = delivery.next_step(box, box, T0 + dt.timedelta(seconds=3))
    assert isinstance(again, Send)
    assert again.report == outbox.Report(S.FAILED, {"reason": "OOMKilled"}, "OOMKilled: 1Gi")


def test_an_invalid_report_is_replaced_by_flat_then_no_metadata_each_stored_ahead() -> None:
    meta = {"job": "j", "gpus": 1, "summary": {"map": 0.5, "imports": ["a"]}}
    box = queued(S.COMPLETE, meta=meta).labelbox
    first = delivery.next_step(box, outbox.Outbox(), T0)
    assert isinstance(first, Store)
    box = first.box
    assert box.sending is not None and box.sending.metadata == meta
    box = outbox.rejected(box, "LabelboxError: BAD_USER_INPUT", T0, initial=2, cap=300)
    assert box.metadata_form == "flat" and box.metadata_rejected == "LabelboxError: BAD_USER_INPUT"
    flat = {"job": "j", "gpus": "1", "summary.map": "0.5", "summary.imports": '["a"]'}
    assert box.sending is not None and box.sending.metadata == flat
    assert box.sending.status is S.COMPLETE and box.next_attempt_time is None  # due at once
    # The replacement is a new call: it is stored before it is made.
    stored = first.box
    assert isinstance(delivery.next_step(box, stored, T0), Store)
    sent = delivery.next_step(box, box, T0)
    assert isinstance(sent, Send) and sent.report.metadata == flat
    box = outbox.rejected(box, "still invalid", T0, initial=2, cap=300)
    assert box.metadata_form == "none" and box.sending is not None and box.sending.metadata == {}
    # Rejected without metadata: not about metadata; it backs off like any failure.
    box = outbox.rejected(box, "still invalid", T0, initial=2, cap=300)
    assert box.metadata_form == "none" and box.next_attempt_time is not None
    # Later reports keep the plainer form.
    for form, want in (("flat", {"job": "j", "gpus": "1"}), ("none", {})):
        later = outbox.enqueue(
            outbox.Outbox(metadata_form=form), [S.TRAINING_MODEL], {"job": "j", "gpus": 1}, None
        )
        report = outbox.next_report(later)
        assert report is not None and report.metadata == want


def test_every_report_names_every_metadata_key_so_no_stale_value_survives_a_merge() -> None:
    waiting = Observation(Phase.PENDING, r.UNSCHEDULABLE, "0/1 nodes: Insufficient gpu")
    status = runstatus.fold(ModelRunStatus(), waiting, T0, 1)
    done = Observation(Phase.SUCCEEDED, r.SUCCEEDED, "done", furthest_stage="train")
    final = runstatus.fold(status, done, T0, 1)
    labelbox_view: dict[str, Any] = {}
    for meta in (status.labelbox.metadata, final.labelbox.metadata):  # Labelbox merges
        assert set(meta) == set(progress.METADATA_KEYS)
        labelbox_view.update(meta)
    assert labelbox_view["message"] == "" and labelbox_view["phase"] == Phase.SUCCEEDED.value


def test_a_fresh_non_final_acknowledgement_waits_for_the_next_write() -> None:
    status = queued(S.EXPORTING_DATA)
    state = RunState(status=status, stored=status)
    box = outbox.begin(status.labelbox, outbox.Report(S.EXPORTING_DATA, {"job": "j"}, None))
    stored = status.model_copy(update={"labelbox": box})
    acked = stored.model_copy(
        update={"labelbox": outbox.acknowledge(box, outbox.Report.of(box.sending), T0)}  # type: ignore[arg-type]
    )
    state = RunState(status=acked, stored=stored)
    assert delivery.only_acknowledgement(state.status, state.stored)
    assert not delivery.store_now(state.status, state.stored, T0, ack_store_delay_s=2)
    assert delivery.wakeup(state.status, state.stored, T0, ack_store_delay_s=2) == 2.0
    assert delivery.store_now(
        state.status, state.stored, T0 + dt.timedelta(seconds=2), ack_store_delay_s=2
    )
    assert delivery.store_now(state.status, state.stored, T0, ack_store_delay_s=0)
    # Anything else that changed is written at once, the acknowledgement with it.
    moved = acked.model_copy(update={"phase": Phase.PREPARING})
    assert delivery.store_now(moved, stored, T0, ack_store_delay_s=2)


def test_a_final_acknowledgement_is_stored_at_once() -> None:
    status = queued(S.COMPLETE)
    box = outbox.begin(status.labelbox, outbox.Report(S.COMPLETE, {"job": "j"}, None))
    stored = status.model_copy(update={"labelbox": box})
    sent = box.sending
    assert sent is not None
    acked = stored.model_copy(
        update={"labelbox": outbox.acknowledge(box, outbox.Report.of(sent), T0)}
    )
    assert delivery.store_now(acked, stored, T0, ack_store_delay_s=60)
    assert delivery.wakeup(acked, acked, T0, ack_store_delay_s=60) is None


def test_nothing_is_queued_below_the_call_in_flight_or_after_a_final() -> None:
    status = queued(S.TRAINING_MODEL)
    box = outbox.begin(status.labelbox, outbox.Report(S.TRAINING_MODEL, {}, None))
    assert outbox.last_queued(box) is S.TRAINING_MODEL
    training = Observation(Phase.TRAINING, r.STAGE_RUNNING, "m", furthest_stage="train")
    folded = runstatus.fold(status.model_copy(update={"labelbox": box}), training, T0, 1)
    assert folded.labelbox.pending == []
    done = Observation(Phase.SUCCEEDED, r.SUCCEEDED, "m", furthest_stage="train")
    final = runstatus.fold(folded, done, T0, 1)
    assert final.labelbox.pending == [S.COMPLETE]
    box = outbox.acknowledge(final.labelbox, outbox.Report(S.TRAINING_MODEL, {}, None), T0)
    box = outbox.begin(box, outbox.Report(S.COMPLETE, {}, None))
    assert box.pending == [] and box.sending is not None
    failed = Observation(Phase.FAILED, r.JOB_DELETED, "m")
    assert (
        runstatus.fold(final.model_copy(update={"labelbox": box}), failed, T0, 1).labelbox.pending
        == []
    )


def test_the_write_ahead_record_survives_the_wire() -> None:
    status = queued(S.EXPORTING_DATA, meta={"job": "j", "gpus": 1, "summary": {"map": 0.5}})
    box = outbox.begin(status.labelbox, outbox.due(status.labelbox, T0))  # type: ignore[arg-type]
    status = status.model_copy(update={"labelbox": box})
    again = ModelRunStatus.model_validate(json.loads(json.dumps(status.wire())))
    assert again == status and again.labelbox.sending == box.sending


def test_the_stored_outbox_is_replaced_exactly_not_merged() -> None:
    """A metadata key the run dropped must not survive in the stored outbox: a merge patch
    keeps keys it does not name, and a restarted operator would send them again."""
    waiting = Observation(Phase.PENDING, r.UNSCHEDULABLE, "0/1 nodes: Insufficient gpu")
    status = runstatus.fold(ModelRunStatus(), waiting, T0, 1)
    assert status.labelbox.metadata.get("message") == "0/1 nodes: Insufficient gpu"
    server = merge_patch({}, status.patch(ModelRunStatus()))
    stored = ModelRunStatus.model_validate(server)
    running = Observation(Phase.EXPORTING, r.STAGE_RUNNING, "", furthest_stage="export")
    moved = runstatus.fold(stored, running, T0, 1)
    assert moved.labelbox.metadata["message"] == ""  # cleared explicitly, for Labelbox's merge
    # A key the outbox drops (here the whole metadata, as a test of the patch): merged as it
    # was (the outbox's own wire form), it would stay on the server.
    moved = moved.model_copy(
        update={"labelbox": moved.labelbox.model_copy(update={"metadata": {}})}
    )
    assert "message" in merge_patch(server, moved.wire())["labelbox"]["metadata"]
    # Patched over what the server holds: the server's outbox is exactly the operator's.
    server = merge_patch(server, moved.patch(stored))
    assert ModelRunStatus.model_validate(server).labelbox == moved.labelbox


def test_replacing_deletes_what_the_new_object_lacks_at_every_depth() -> None:
    old = {"a": 1, "m": {"x": 1, "y": {"z": 2}}, "gone": {"k": 1}}
    new = {"a": 2, "m": {"y": {"w": 3}}}
    patch = replacing(old, new)
    assert patch == {"a": 2, "m": {"x": None, "y": {"z": None, "w": 3}}, "gone": None}
    assert merge_patch(old, patch) == new
    assert replacing(None, new) == new and replacing(old, None) is None


# --- the guarantee, under crashes at every step --------------------------------------------


class Crash(Exception):
    """The operator process died here (SIGKILL): its memory is gone."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies `{"status": ...}` merge patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def life(stages_reached: int, ends: str, waits: bool) -> list[Observation]:
    """What a run's pods show, in order, from the Job's creation to its end."""
    obs = [Observation(Phase.PENDING, r.WAITING_FOR_POD, "no pod yet")]
    if waits:
        obs.append(Observation(Phase.PENDING, r.UNSCHEDULABLE, "0/1 nodes: Insufficient gpu"))
    phases = [Phase.EXPORTING, Phase.PREPARING, Phase.TRAINING]
    for i, stage in enumerate(["export", "prepare", "train"][:stages_reached]):
        obs.append(Observation(phases[i], r.STAGE_RUNNING, f"{stage} runs", furthest_stage=stage))
    last = ["export", "prepare", "train"][stages_reached - 1] if stages_reached else None
    if ends == "complete":
        obs.append(Observation(Phase.SUCCEEDED, r.SUCCEEDED, "done", furthest_stage="train"))
    else:
        obs.append(Observation(Phase.FAILED, r.OOM_KILLED, "1Gi limit", furthest_stage=last))
    return obs


@dataclass
class World:
    """The API server (what is stored), Labelbox (what it received) and the clock."""

    data: st.DataObject
    crashes_left: int
    stored: dict[str, Any] = field(default_factory=dict)
    received: list[outbox.Report] = field(default_factory=list)
    crashes: int = 0
    ambiguous: int = 0  # calls Labelbox took but answered as failed (a timeout)
    now: dt.datetime = T0
    healthy: bool = False  # the end: no more crashes or Labelbox errors
    # What Labelbox rejects as invalid (never taken, whatever happens to the answer):
    # None, "strings" (a non-string metadata value, like the strict fake) or "any" metadata.
    strict: str | None = None
    rejections: int = 0
    # Live training progress: reports the trainer made so far (each newer than the last), and
    # whether this run makes any.
    progressing: bool = False
    progress_made: int = 0

    def progress(self) -> dict[str, Any] | None:
        """The run's newest live progress, maybe a newer one than last pass's."""
        if not self.progressing:
            return None
        if not self.healthy and self.data.draw(st.booleans()):
            self.progress_made += 1
        if not self.progress_made:
            return None
        n = self.progress_made
        return {"epoch": n, "measuredAt": (T0 + dt.timedelta(seconds=n)).isoformat()}

    def invalid(self, report: outbox.Report) -> bool:
        if self.strict == "strings":
            return any(not isinstance(v, str) for v in report.metadata.values())
        return self.strict == "any" and bool(report.metadata)

    def tick(self) -> dt.datetime:
        if not self.healthy:
            self.now += dt.timedelta(seconds=self.data.draw(st.sampled_from([0, 0.5, 1, 3])))
        return self.now

    def crash_here(self) -> bool:
        if self.healthy or self.crashes_left == 0 or not self.data.draw(st.booleans()):
            return False
        self.crashes_left -= 1
        self.crashes += 1
        return True

    async def store(self, state: RunState) -> None:
        """`reconcile.write_status`'s patch, applied as the API server applies it."""
        patch = state.status.patch(state.stored)
        if self.crash_here():
            if self.data.draw(st.booleans()):  # the write landed; the answer never came
                self.stored = merge_patch(self.stored, patch)
            raise Crash
        self.stored = merge_patch(self.stored, patch)
        state.stored = state.status

    async def send(self, box: outbox.Outbox, report: outbox.Report) -> outbox.Outbox:
        self.tick()
        invalid = self.invalid(report)
        if self.crash_here():
            if not invalid and self.data.draw(st.booleans()):  # took it; the answer never came
                self.received.append(report)
            raise Crash
        if invalid:
            self.rejections += 1
            return outbox.rejected(box, "BAD_USER_INPUT", self.now, initial=1, cap=4)
        outcome = "ok" if self.healthy else self.data.draw(st.sampled_from(["ok", "ok", "error"]))
        if outcome == "error":
            if self.data.draw(st.booleans()):  # it took effect, and still answered an error
                self.received.append(report)
                self.ambiguous += 1
            return outbox.failed(box, "503", self.now, initial=1, cap=4)
        self.received.append(report)
        return outbox.acknowledge(box, report, self.now)


async def operate(world: World, path: list[Observation], ack_delay: float) -> RunState:
    """Passes until the pod's last state is reported and stored, restarting after crashes."""
    at = 0
    state = RunState.from_status(world.stored)
    for passes in range(400):
        if passes == 200:
            world.healthy = True  # from here on the run must settle
        if world.healthy:
            at = len(path) - 1
        else:  # the pod moves on by zero, one or two steps between passes
            at = min(len(path) - 1, at + world.data.draw(st.integers(0, 2)))
        try:
            if not state.status.finished:
                state.status = runstatus.fold(state.status, path[at], world.tick(), 1)
                if path[at].phase is Phase.TRAINING:  # as `reconcile.Pass.queue_progress`
                    box = outbox.queue_progress(
                        state.status.labelbox, world.progress(), world.now, 1.0
                    )
                    state.status = state.status.model_copy(update={"labelbox": box})
            await delivery.deliver(state, world.store, world.send, world.tick, ack_delay)
        except Crash:
            state = RunState.from_status(json.loads(json.dumps(world.stored)))  # restart
            continue
        if state.status.finished and outbox.drained(state.status.labelbox) and not state.unsaved:
            return state
        world.tick()
    raise AssertionError(f"never settled: {state.status.labelbox}")


def check_timeline(world: World, path: list[Observation]) -> None:
    got = world.received
    ranks = [rep.status.rank for rep in got]
    assert ranks == sorted(ranks), [rep.status.value for rep in got]
    finals = [i for i, rep in enumerate(got) if rep.status.final]
    assert finals, "the final status never arrived"
    first_final = got[finals[0]]
    for rep in got[finals[0] :]:  # nothing after a final but the same final, word for word
        assert rep == first_final, [rep.status.value for rep in got]
    # Repeats: the same call again. A changed notice is a new call of the same status.
    repeats = sum(1 for a, b in itertools.pairwise(got) if a == b)
    assert repeats <= world.crashes + world.ambiguous, (repeats, world.crashes, world.ambiguous)
    # Every stage the pod reached was told, in order, and the run's end last.
    distinct = list(dict.fromkeys(rep.status for rep in got))
    assert distinct == progress.statuses_for(path[-1]) or (
        distinct == [S.EXPORTING_DATA, *progress.statuses_for(path[-1])]
    ), distinct
    # Live progress: only on TRAINING_MODEL, never going back, never on or after a final.
    told = [rep.progress_at for rep in got if rep.progress_at]
    assert told == sorted(told), told
    assert all(rep.status is S.TRAINING_MODEL for rep in got if rep.progress_at)
    assert not any(rep.progress_at for rep in got[finals[0] :])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    stages=st.integers(0, 3),
    ends=st.sampled_from(["complete", "failed"]),
    waits=st.booleans(),
    crashes=st.integers(0, 6),
    ack_delay=st.sampled_from([0.0, 2.0, 30.0]),
    strict=st.sampled_from([None, None, "strings", "any"]),
    progressing=st.booleans(),
)
def test_labelbox_never_goes_backwards_whatever_the_crashes(
    data: st.DataObject,
    stages: int,
    ends: str,
    waits: bool,
    crashes: int,
    ack_delay: float,
    strict: str | None,
    progressing: bool,
) -> None:
    if ends == "complete":
        stages = 3
    path = life(stages, ends, waits)
    if progressing and stages == 3:  # a training long enough for several progress reports
        path = [*path[:-1], *[path[-2]] * 6, path[-1]]
    world = World(data=data, crashes_left=crashes, strict=strict, progressing=progressing)
    state = asyncio.run(operate(world, path, ack_delay))
    check_timeline(world, path)
    # A Labelbox that rejects the metadata still gets every status, the final one included,
    # each in a form it takes: the degrade path never wedges the timeline.
    assert not any(world.invalid(rep) for rep in world.received)
    if strict is not None:
        assert world.rejections >= 1
        assert state.status.labelbox.metadata_form == ("flat" if strict == "strings" else "none")
    stored = ModelRunStatus.model_validate(world.stored)
    assert stored.labelbox.acknowledged is state.status.labelbox.acknowledged
    assert stored.labelbox.acknowledged is not None and stored.labelbox.acknowledged.final
    assert stored.labelbox.sending is None and stored.phase is path[-1].phase
