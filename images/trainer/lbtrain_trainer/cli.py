"""``lbtrain trainer``: trainer stages: export | prepare | train | run | types (the trainer image).

The operator runs each stage as a container with the environment contract of
:mod:`lbtrain.contract`; every variable can also be given as a flag (flags win). The exit code
is the contract: 0 done, 65 the data cannot train, 77 and 78 the artifact destination leaves its
root or cannot be written (the operator fails the run without retry), anything else is retried.
Every stage, failed or not, leaves a JSON summary of at most 4096 bytes at the termination
message path. ``types`` lists the registered model types (built in or
from an installed plugin) and where each comes from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lbtrain import contract
from lbtrain_trainer import summary
from lbtrain_trainer.errors import BadInputError, TrainerError
from lbtrain_trainer.settings import Settings, resolve

log = logging.getLogger("lbtrain_trainer")

STAGE_HELP = {
    "export": "export the model run's rows and media from Labelbox, resolve hyperparameters",
    "prepare": "build train/validation/test datasets; exit 65 if the data cannot train",
    "train": "train, evaluate, upload predictions and metrics, save weights",
    "run": "export, prepare and train in one process (a laptop, a debugger)",
}
TYPES_HELP = "list the registered model types and where each comes from"
EPILOG = f"""\
environment (each also a flag; flags win):
  {contract.ENV_MODEL_RUN_ID:34} --model-run-id       Labelbox model run id (required)
  {contract.ENV_MODEL_TYPE:34} --model-type         a registered type (`lbtrain trainer types`)
  {contract.ENV_MODEL_ID:34} --model-id           Labelbox model id
  {contract.ENV_ORGANIZATION_ID:34} --organization-id    Labelbox organization id
  {contract.ENV_LABELBOX_API_KEY:34} --api-key            API key (prefer the env var)
  {contract.ENV_LABELBOX_ENDPOINT:34} --endpoint           GraphQL endpoint
  {contract.ENV_LABELBOX_REST_ENDPOINT:34} --rest-endpoint      REST endpoint
  {contract.ENV_WORKSPACE:34} --workspace          workspace ({contract.DEFAULT_WORKSPACE})
  {contract.ENV_ARTIFACTS:34} --artifacts          weights and checkpoints: path or fsspec URI
  {contract.ENV_ARTIFACTS_ROOT:34} --artifacts-root     refuse an --artifacts outside this root
  {contract.ENV_HYPERPARAMETERS:34} --hyperparameters    JSON object of template defaults
  {contract.ENV_TERMINATION_MESSAGE_PATH:34} --termination-message-path
  {contract.ENV_PRETRAINED:34} --pretrained         directory of pretrained weights
  {contract.ENV_ALLOW_HUB_DOWNLOAD:34} --allow-hub-download allow downloading weights from a hub
  {contract.ENV_ALLOW_LOOPBACK_MEDIA:34} --allow-loopback-media
  {"":34} fetch media from 127.0.0.1 too (test servers)
  {contract.ENV_NUM_NODES:34} --num-nodes          pods of the run (set for several)
  {contract.COMPLETION_INDEX_ENV:34} --completion-index   this pod's index (Indexed Job)
  {contract.ENV_RUN_UID:34} --run-uid            the ModelRun's uid (keys the shared prepare)

exit codes: {contract.EXIT_OK} done; {contract.EXIT_BAD_INPUT} the data cannot train (no retry); \
{contract.EXIT_DESTINATION_ESCAPES} the artifact destination leaves its root (no retry); \
{contract.EXIT_DESTINATION_UNUSABLE} the artifact destination cannot be written: no backend, \
no bucket, refused credentials (no retry); \
2 bad settings; 1 other (retried)
"""


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings")
    for flag in (
        "model-run-id",
        "model-type",
        "model-id",
        "organization-id",
        "api-key",
        "endpoint",
        "rest-endpoint",
        "workspace",
        "artifacts",
        "artifacts-root",
        "hyperparameters",
        "termination-message-path",
        "pretrained",
        "num-nodes",
        "completion-index",
        "run-uid",
    ):
        group.add_argument(f"--{flag}", default=None, metavar=flag.split("-")[-1].upper())
    group.add_argument("--allow-hub-download", action="store_const", const="true", default=None)
    group.add_argument("--allow-loopback-media", action="store_const", const="true", default=None)
    parent.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbtrain trainer",
        description="Train a Labelbox model run (the trainer image).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    parent = _common()
    for stage, text in STAGE_HELP.items():
        sub.add_parser(
            stage,
            parents=[parent],
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    types = sub.add_parser("types", help=TYPES_HELP, description=TYPES_HELP)
    types.add_argument("--json", action="store_true", help="one JSON object per type")
    return parser


def list_types(*, as_json: bool) -> int:
    """Print the registry (``lbtrain trainer types``); a broken plugin fails it (exit 2)."""
    from lbtrain_trainer.modeltypes import registry

    try:
        registrations = registry.registry().registrations()
    except TrainerError as exc:
        print(f"lbtrain trainer types: {exc}", file=sys.stderr)
        return exc.exit_code
    for r in registrations:
        kind = r.model_type
        entry = {
            "name": r.name,
            "origin": r.origin,
            "source": r.source,
            "media": kind.media,
            "headline_metric": kind.headline_metric,
            "pretrained": list(kind.pretrained),
            "description": kind.describe(),
        }
        if as_json:
            print(json.dumps(entry))
        else:
            print(
                f"{r.name:30} {r.origin:24} {kind.media:6} {kind.headline_metric:10} "
                f"{entry['description']}"
            )
    return contract.EXIT_OK


def _stages(name: str) -> list[tuple[str, Callable[[Settings], dict[str, Any]]]]:
    from lbtrain_trainer.export import run_export
    from lbtrain_trainer.prepare import run_prepare

    def train(settings: Settings) -> dict[str, Any]:
        from lbtrain_trainer.train import run_train  # imports torch

        return run_train(settings)

    table: dict[str, Callable[[Settings], dict[str, Any]]] = {
        "export": run_export,
        "prepare": run_prepare,
        "train": train,
    }
    names = list(contract.STAGES) if name == "run" else [name]
    return [(n, table[n]) for n in names]


def _failure(stage: str, exc: BaseException, code: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "stage": stage,
        "status": "failed",
        "exit_code": code,
        "error": str(exc) or type(exc).__name__,
    }
    if isinstance(exc, BadInputError):
        result["row_ids"] = exc.row_ids[:20]
    return result


def _report(result: dict[str, Any], path: Path | None) -> None:
    """Write the termination message, once per container: under torchrun with several
    processes per pod, local rank 0 speaks for the container."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        summary.write(result, path)


class Terminated(KeyboardInterrupt):
    """SIGTERM: the kubelet stopping the pod (a cancelled run, an eviction, a deleted Job).

    In a container the trainer is PID 1, and the kernel ignores a signal whose action is the
    default for PID 1: without a handler, SIGTERM did nothing and the kubelet waited out the
    whole grace period before SIGKILL, holding the GPU (27 s for a cancelled run on the
    testbed's real node, against 4 s for a pod that exits). Raised where Ctrl-C would raise
    KeyboardInterrupt, so the stage's `finally` blocks run and the termination message says why.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.stage == "types":
        return list_types(as_json=args.json)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    flags = {k: v for k, v in vars(args).items() if k not in ("stage", "log_level")}
    stage = args.stage
    settings: Settings | None = None
    try:
        settings = resolve(flags)
        results: dict[str, Any] = {}
        for stage, run in _stages(args.stage):
            started = time.perf_counter()
            results = run(settings)
            log.info("stage %s done in %.1fs", stage, time.perf_counter() - started)
        # Every successful stage says "status": "ok", as a failed one says "failed".
        _report(
            {"status": "ok", "model_run_id": settings.model_run_id, **results},
            settings.termination_message_path,
        )
        return contract.EXIT_OK
    except TrainerError as exc:
        log.error("%s failed: %s", stage, exc)
        code = exc.exit_code
        failure = _failure(stage, exc, code)
    except KeyboardInterrupt as exc:
        code = 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
        failure = _failure(stage, exc, code)
    except Exception as exc:  # anything else is retriable
        log.error("%s failed:\n%s", stage, traceback.format_exc())
        code = 1
        failure = _failure(stage, exc, code)
    path = settings.termination_message_path if settings else None
    fallback = flags.get("termination_message_path") or os.environ.get(
        contract.ENV_TERMINATION_MESSAGE_PATH
    )
    if path is None and fallback:
        path = Path(fallback)
    _report(failure, path)
    return code
