"""Checkpoints, so an evicted or restarted pod resumes instead of starting over.

After every epoch, rank 0 writes model, optimizer, scheduler and RNG state with the number of
finished epochs to ``<artifacts>/checkpoint/last.pt``. A new attempt loads it only when its
fingerprint (model type and size, label set, and the hyperparameters that shape the network or
the optimisation) matches, so a changed label set never resumes a wrong head; ``epochs`` is left
out, so a run can be extended. A marker records a finished upload, so a pod that dies after
uploading does not upload again.

Under torchrun every rank must resume from the same state, all of it (DDP broadcasts only the
parameters at wrap time, not the optimizer's moments, the scheduler's step or the epoch): rank 0
alone reads the checkpoint and decides whether it fits, and sends what it read to every rank
(:func:`load_everywhere`). Ranks reading it each for themselves could decide differently (one
read failing, or meeting a checkpoint another attempt is writing) and then run different numbers
of steps, which hangs the collectives until the process group times out.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lbtrain_trainer.artifacts import Destination
from lbtrain_trainer.hyperparams import Hyperparameters

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint/last.pt"
UPLOAD_MARKER = "checkpoint/uploaded.json"
FINGERPRINT_HP = (
    "model_size",
    "image_size",
    "max_length",
    "vocab_size",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "seed",
    "feature_name",
)


def fingerprint(description: Mapping[str, Any], hp: Hyperparameters) -> str:
    data = {**description, **{k: getattr(hp, k) for k in FINGERPRINT_HP}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class State:
    epoch: int = 0  # finished epochs
    model: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: Any = None


class Checkpointer:
    def __init__(self, destination: Destination, fingerprint: str) -> None:
        self.destination = destination
        self.fingerprint = fingerprint

    @property
    def uri(self) -> str:
        return self.destination.shown(CHECKPOINT)

    def save(self, state: State) -> None:
        # Streamed into the destination: never a whole serialized copy in memory.
        with self.destination.open_write(CHECKPOINT) as out:
            torch.save(
                {
                    "fingerprint": self.fingerprint,
                    "epoch": state.epoch,
                    "model": state.model,
                    "optimizer": state.optimizer,
                    "scheduler": state.scheduler,
                    "history": state.history,
                    "rng": torch.get_rng_state(),
                },
                out,
            )
        log.info("checkpoint: epoch %d saved to %s", state.epoch, self.uri)

    def load(self) -> State | None:
        data = self.destination.read_bytes(CHECKPOINT)
        if data is None:
            return None
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as exc:  # a corrupt checkpoint must not block a fresh start
            log.warning("ignoring unreadable checkpoint %s: %s", self.uri, exc)
            return None
        if raw.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to a different model setup", self.uri)
            return None
        return State(
            raw["epoch"],
            raw["model"],
            raw["optimizer"],
            raw["scheduler"],
            raw["history"],
            raw.get("rng"),
        )

    def upload_id(self, epoch: int) -> str:
        """Names one model's upload: its import names and prediction uuids derive from it."""
        return f"{self.fingerprint[:12]}-e{epoch}"

    def upload_done(self, epoch: int) -> dict[str, Any] | None:
        """The outcome of an earlier upload of this model after ``epoch`` epochs, if any
        (``imports`` and ``upload``: rows, accepted, rejected, first errors)."""
        data = self.destination.read_bytes(UPLOAD_MARKER)
        if data is None:
            return None
        marker: dict[str, Any] = json.loads(data)
        if marker.get("fingerprint") != self.fingerprint or marker.get("epoch") != epoch:
            return None
        return marker

    def mark_uploaded(
        self, imports: list[str], epoch: int, upload: dict[str, Any] | None = None
    ) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "imports": imports,
            "epoch": epoch,
            "upload": upload or {},
        }
        self.destination.write_bytes(UPLOAD_MARKER, json.dumps(payload).encode())


def load_everywhere(checkpointer: Checkpointer, distributed: bool, rank: int) -> State | None:
    """The checkpoint rank 0 read (None: start fresh), on every rank of the process group."""
    state = checkpointer.load() if rank == 0 else None
    if not distributed:
        return state
    shared: list[State | None] = [state]
    torch.distributed.broadcast_object_list(shared, src=0)
    received = shared[0]
    if received is not None:
        log.info("rank %d resumes after epoch %d (read by rank 0)", rank, received.epoch)
    return received
