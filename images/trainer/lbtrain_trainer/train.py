"""The ``train`` stage (Labelbox status TRAINING_MODEL): train, evaluate, upload, save.

One loop serves every model type (the task supplies batching, loss and prediction). After
each epoch rank 0 checkpoints to the artifact destination, so a restarted pod resumes at the
next epoch, every rank from the state rank 0 read. Then rank 0 alone evaluates on the test
split, uploads predictions and per-row metrics to the model run, writes the run-level results
into the model run config, and saves weights with a model card; other ranks only train.
Predictions go to every row of the run by default (hyperparameter ``predict_splits``), and an
upload Labelbox partly rejects still completes
(:func:`lbtrain_trainer.labelbox_io.upload_predictions`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lbtrain_trainer import features, hyperparams, labelbox_io, live_progress
from lbtrain_trainer.artifacts import Destination, open_checked
from lbtrain_trainer.checkpoint import Checkpointer, State, fingerprint, load_everywhere
from lbtrain_trainer.evaluation import Evaluation, evaluate
from lbtrain_trainer.hyperparams import RESULTS_KEY, Hyperparameters
from lbtrain_trainer.live_progress import LiveProgress, Position
from lbtrain_trainer.loaders import epoch_batches, make_loader, predict_all
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.modeltypes import registry
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.runtime import (
    Runtime,
    make_optimizer,
    make_scheduler,
    prepare_model,
    seed_everything,
    setup,
    teardown,
    unwrap,
)
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.splits import Split, SplitPlan
from lbtrain_trainer.tasks import make_task
from lbtrain_trainer.tasks.base import Task, TaskContext
from lbtrain_trainer.validation import Validated, Validator, epoch_validator, is_due
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)
MAX_GRAD_NORM = 5.0
WEIGHTS = "model/weights.pt"


def train_step(
    task: Task,
    model: nn.Module,
    batch: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    runtime: Runtime,
) -> torch.Tensor:
    """One optimisation step on ``batch``; returns the detached loss (still on the device)."""
    loss = task.loss(model, batch, runtime)
    optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def train_epochs(
    task: Task,
    model: nn.Module,
    train_examples: Sequence[Example],
    hp: Hyperparameters,
    runtime: Runtime,
    checkpointer: Checkpointer,
    live: LiveProgress | None = None,
    validate: Validator | None = None,
) -> tuple[State, int, float]:
    """Train from the checkpoint (if any) to ``hp.epochs``; return the state, the epoch the
    run resumed from, and training throughput in examples per second. `live` (rank 0's)
    hears where training is at each epoch end and, when it is due, mid-epoch; `validate`
    (rank 0's, :mod:`lbtrain_trainer.validation`) measures the model after the epochs
    ``hp.validate_every_epochs`` names, before that epoch's report and checkpoint."""
    live = live or LiveProgress("", None)
    loader = make_loader(task, train_examples, hp, runtime, train=True)
    optimizer = make_optimizer(model.parameters(), hp, runtime)
    scheduler = make_scheduler(optimizer, max(1, hp.epochs * len(loader)), hp.warmup_fraction)
    state = load_everywhere(checkpointer, runtime.distributed, runtime.rank) or State()
    resumed_from = state.epoch
    if state.model:
        unwrap(model).load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        log.info("resuming after epoch %d of %d", state.epoch, hp.epochs)
    validated = Validated.from_history(state.history)  # a resumed run reports its last one
    seen, seconds = 0, 0.0
    per_epoch = len(loader)
    per_step = hp.batch_size * runtime.world_size

    def position(epoch: int, batches: int, loss: float, elapsed: float, examples: int) -> Position:
        done = (epoch - resumed_from) * per_epoch + batches
        return Position(
            epoch=epoch + 1,
            epochs=hp.epochs,
            step=epoch * per_epoch + batches,
            steps=hp.epochs * per_epoch,
            train_loss=loss / max(1, batches),
            examples_per_s=examples / elapsed if elapsed > 0 else None,
            elapsed_s=elapsed,
            steps_this_attempt=done,
            validation_metric=validated.metric if validated else None,
            validation_value=validated.value if validated else None,
        )

    model.train()
    upcoming: Iterator[Any] | None = None
    for epoch in range(state.epoch, hp.epochs):
        torch.manual_seed(hp.seed + epoch)  # augmentation draws repeat on resume
        batches_of_epoch = upcoming if upcoming is not None else epoch_batches(loader, epoch)
        upcoming = None
        started, batches = time.perf_counter(), 0
        # The loss is summed on the device and read once per epoch: reading it every step
        # would make the host wait for the GPU, and the next batch's copy and kernel launches
        # could no longer overlap the current step.
        summed = torch.zeros((), device=runtime.device)
        for batch in batches_of_epoch:
            summed += train_step(task, model, batch, optimizer, scheduler, runtime)
            batches += 1
            if live.due():  # one clock read; the loss is read (a device sync) only when due
                so_far = seconds + time.perf_counter() - started
                examples = seen + min(len(train_examples), batches * per_step)
                live.offer(position(epoch, batches, float(summed), so_far, examples))
        total = float(summed)
        elapsed = time.perf_counter() - started
        if hp.num_workers > 0 and epoch + 1 < hp.epochs:
            # Start the next epoch's loading now: the workers fill their queues while rank 0
            # writes the checkpoint, instead of the next epoch waiting for its first batches.
            upcoming = epoch_batches(loader, epoch + 1)
        seen, seconds = seen + len(train_examples), seconds + elapsed
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(total / max(1, batches), 5),
            "seconds": round(elapsed, 3),
        }
        checked = ""
        if validate is not None and is_due(epoch + 1, hp.epochs, hp.validate_every_epochs):
            validated = validate(model)
            entry.update(validated.history())
            checked = f", validation {validated.metric} {validated.value:.4f}"
        live.offer(position(epoch, batches, total, seconds, seen))
        state.epoch = epoch + 1
        state.history.append(entry)
        log.info(
            "epoch %d/%d: loss %.4f (%.1fs)%s",
            epoch + 1,
            hp.epochs,
            total / max(1, batches),
            elapsed,
            checked,  # only an epoch that was validated: an older value is not this epoch's
        )
        if runtime.is_main:
            state.model = unwrap(model).state_dict()
            state.optimizer = optimizer.state_dict()
            state.scheduler = scheduler.state_dict()
            checkpointer.save(state)
        runtime.barrier()
    return state, resumed_from, seen / seconds if seconds else 0.0


def save_model(task: Task, model: nn.Module, destination: Destination, card: dict[str, Any]) -> str:
    with destination.open_write(WEIGHTS) as out:  # streamed: no whole copy in memory
        torch.save(unwrap(model).state_dict(), out)
    weights = destination.shown(WEIGHTS)
    destination.write_bytes("model/model.json", json.dumps(card, indent=2, default=str).encode())
    scratch = Workspace(task.ctx.workspace).scratch_dir
    scratch.mkdir(parents=True, exist_ok=True)
    task.save_extras(scratch)
    for extra in scratch.iterdir():
        destination.write_bytes(f"model/{extra.name}", extra.read_bytes())
    return weights


def _results(
    evaluation: Evaluation,
    dataset: PreparedDataset,
    hp: Hyperparameters,
    state: State,
    throughput: dict[str, Any],
    weights: str,
) -> dict[str, Any]:
    return {
        "model_type": dataset.model_type,
        "model_size": hp.model_size,
        "headline_metric": evaluation.headline_name,
        evaluation.headline_name: evaluation.headline,
        "metrics": evaluation.metrics,
        "evaluated_on": dataset.eval_split.value,
        "splits": dataset.counts(),
        "dropped_rows": {k: len(v) for k, v in dataset.dropped.items()},
        "hyperparameters": hp.to_dict(),
        "epochs_completed": state.epoch,
        "loss_history": state.history[-20:],
        "throughput": throughput,
        "weights": weights,
    }


def _split_sources(ws: Workspace) -> dict[str, int] | None:
    """Rows per split source (export / labelbox / hash), as the export stage resolved them."""
    if not ws.splits_file.exists():
        return None
    return SplitPlan.from_json(json.loads(ws.splits_file.read_text())).counts()


def other_split_rows(
    task: Task,
    model: nn.Module,
    dataset: PreparedDataset,
    hp: Hyperparameters,
    runtime: Runtime,
    model_run_id: str,
    tune_examples: Sequence[Example],
    tune_outputs: Sequence[RowOutput],
) -> list[dict[str, Any]]:
    """Prediction and metric rows for the splits other than the evaluation one (Labelbox users
    filter the model run by split to find label errors in the training data)."""
    rows: list[dict[str, Any]] = []
    for split in Split:
        if split == dataset.eval_split:
            continue
        examples = dataset.split(split)
        if not examples:
            continue
        outputs = predict_all(task, model, examples, hp, runtime)
        evaluation = evaluate(
            dataset, hp, model_run_id, examples, outputs, tune_examples, tune_outputs
        )
        rows += with_split(evaluation.rows, split)
    return rows


def with_split(rows: Sequence[dict[str, Any]], split: Split) -> list[dict[str, Any]]:
    """The rows with each metric named after its split (``accuracy_test``): Labelbox averages a
    metric over every row that has it, so a held-out metric must not share its name with the
    training rows' one."""
    return [
        {**row, "metricName": f"{row['metricName']}_{split.value}"}
        if "metricValue" in row and isinstance(row.get("metricName"), str)
        else row
        for row in rows
    ]


def run_train(settings: Settings, model_run: Any | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    ws = Workspace(settings.workspace)
    hp = hyperparams.load(ws.require(ws.hyperparameters_file, "export"))
    dataset = PreparedDataset.load(ws.require(ws.dataset_file, "prepare"))
    # Before the model is built or a batch runs: a bucket that cannot take the weights fails now.
    destination = open_checked(settings.artifact_destination)
    runtime = setup(hp)
    try:
        seed_everything(hp.seed)
        task = make_task(
            TaskContext(dataset, hp, ws.root, settings.pretrained, settings.allow_hub_download)
        )
        model = prepare_model(task.build_model(), runtime, task.channels_last, hp.compile)
        checkpointer = Checkpointer(destination, fingerprint(task.describe(), hp))
        live = live_progress.from_env(runtime.is_main)
        validate = epoch_validator(task, dataset, hp, runtime, settings.model_run_id)
        try:
            state, resumed_from, train_rate = train_epochs(
                task, model, dataset.split(Split.TRAIN), hp, runtime, checkpointer, live, validate
            )
        except BaseException:
            live.close(0)  # a failing (or terminated) run does not wait for a report
            raise
        live.close()  # the last epoch's report leaves before the run can complete
        if not runtime.is_main:
            return {"stage": "train", "status": "ok", "rank": runtime.rank}
        eval_examples = dataset.split(dataset.eval_split)
        t0 = time.perf_counter()
        eval_outputs = predict_all(task, model, eval_examples, hp, runtime)
        eval_rate = len(eval_examples) / max(1e-9, time.perf_counter() - t0)
        tune_examples: list[Example] = []
        tune_outputs: list[RowOutput] = []
        if registry.get(dataset.model_type).tunes_thresholds:
            tune_examples = dataset.split(dataset.tune_split)
            tune_outputs = predict_all(task, model, tune_examples, hp, runtime)
        evaluation = evaluate(
            dataset,
            hp,
            settings.model_run_id,
            eval_examples,
            eval_outputs,
            tune_examples,
            tune_outputs,
        )
        throughput = {
            "train_examples_per_s": round(train_rate, 2),
            "eval_examples_per_s": round(eval_rate, 2),
            "device": str(runtime.device),
            "world_size": runtime.world_size,
        }
        card = {
            **task.describe(),
            "hyperparameters": hp.to_dict(),
            "thresholds": evaluation.thresholds,
            "headline": {evaluation.headline_name: evaluation.headline},
        }
        weights = save_model(task, model, destination, card)
        results = _results(evaluation, dataset, hp, state, throughput, weights)
        rows = with_split(evaluation.rows, dataset.eval_split)
        if hp.predict_splits == "all":
            rows = rows + other_split_rows(
                task,
                model,
                dataset,
                hp,
                runtime,
                settings.model_run_id,
                tune_examples,
                tune_outputs,
            )
        if ws.features_file.exists():  # name features by schemaId where the export gave one
            rows = features.apply(rows, json.loads(ws.features_file.read_text()))
        model_run = model_run or labelbox_io.get_model_run(settings)
        done = checkpointer.upload_done(state.epoch)
        if done is None:
            uploaded = labelbox_io.upload_predictions(
                model_run, rows, checkpointer.upload_id(state.epoch), hp.min_accepted_fraction
            )
            imports, upload = uploaded.imports, uploaded.summary()
            checkpointer.mark_uploaded(imports, state.epoch, upload)
        else:
            imports, upload = done["imports"], done.get("upload") or {}
            log.info("predictions were uploaded by an earlier attempt: %s", imports)
        split_sources = _split_sources(ws)
        labelbox_io.update_config(
            model_run,
            {**results, "imports": imports, "upload": upload, "split_sources": split_sources},
            RESULTS_KEY,
        )
        return {
            "stage": "train",
            "status": "ok",
            "model_run_id": settings.model_run_id,
            "model_type": dataset.model_type,
            "model_size": hp.model_size,
            "headline_metric": evaluation.headline_name,
            "metrics": {k: v for k, v in evaluation.metrics.items() if isinstance(v, int | float)},
            "per_class": evaluation.metrics.get("per_class", {}),
            "predictions": sum("metricValue" not in row for row in rows),
            "metric_rows": sum("metricValue" in row for row in rows),
            "imports": imports,
            "rows_uploaded": upload.get("rows", 0),
            "rows_rejected": upload.get("rejected", 0),
            "first_rejections": upload.get("first_errors", []),
            "split_sources": split_sources,
            "predicted_splits": hp.predict_splits,
            "artifacts": {"weights": weights, "checkpoint": checkpointer.uri},
            "epochs_completed": state.epoch,
            "resumed_from_epoch": resumed_from,
            "throughput": throughput,
            "duration_s": round(time.perf_counter() - started, 2),
            "dropped_rows": {k: len(v) for k, v in dataset.dropped.items()},
        }
    finally:
        teardown(runtime)
