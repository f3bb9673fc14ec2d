"""`lbtrain fake-labelbox`: a fake Labelbox API for local runs and tests.

The test fake as a service, for local runs of the operator and trainer.

It serves one model run per model type, each with a small bundled dataset (made by the
trainer's synthetic generator) through the real export flow, accepts status updates and
prediction imports, prints a timeline of what it receives, and serves it at `/timeline`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from lbtrain import contract
from lbtrain_dev.fake_labelbox.server import FakeLabelbox
from lbtrain_dev.ids import fake_cuid


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtrain fake-labelbox",
        description="A fake Labelbox API that the real labelbox SDK talks to (development and "
        "tests only). Point the operator and trainer at --labelbox-endpoint "
        "http://HOST:PORT/graphql and --labelbox-rest-endpoint http://HOST:PORT/api/v1.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8091)
    p.add_argument(
        "--api-key",
        default="fake-labelbox-key",
        help="the API key clients must send (Bearer); others get AUTHENTICATION_ERROR",
    )
    p.add_argument(
        "--model-type",
        action="append",
        choices=contract.MODEL_TYPES,
        help="serve a model run of this type (repeatable; default: all six)",
    )
    p.add_argument("--rows", type=int, default=40, help="rows in each bundled dataset")
    p.add_argument(
        "--model-id", default=fake_cuid("fake-model"), help="the Labelbox model id of the runs"
    )
    p.add_argument(
        "--strict-metadata",
        action="store_true",
        help="reject update_status metadata with non-string values (BAD_USER_INPUT)",
    )
    p.add_argument(
        "--no-export-splits",
        action="store_true",
        help="exports carry no split; splits are only in model_run_data_rows()",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the timeline as it grows")
    return p


def seed(fake: FakeLabelbox, types: Sequence[str], rows: int, model_id: str) -> dict[str, str]:
    """Register one model run per type with its dataset; answer {model type: model run id}."""
    try:
        from lbtrain_trainer.synthetic import make_dataset
    except ImportError:  # the trainer extra is not installed: runs without data
        make_dataset = None  # type: ignore[assignment]
    runs = {}
    for model_type in types:
        run_id = fake_cuid(f"fake-{model_type}")
        data = (
            make_dataset(
                model_type,
                rows,
                media_url_for=fake.add_media,
                model_id=model_id,
                model_run_id=run_id,
            ).rows
            if make_dataset is not None
            else []
        )
        fake.add_model_run(run_id, model_id=model_id, rows=data, name=f"fake {model_type}")
        runs[model_type] = run_id
    return runs


async def serve(args: argparse.Namespace) -> None:
    fake = FakeLabelbox(api_key=args.api_key)
    await fake.start(host=args.host, port=args.port)
    fake.strict_metadata = args.strict_metadata
    fake.export_splits = not args.no_export_splits
    runs = seed(fake, args.model_type or contract.MODEL_TYPES, args.rows, args.model_id)
    print(f"fake Labelbox on {fake.base_url}")
    print(f"  --labelbox-endpoint {fake.endpoint} --labelbox-rest-endpoint {fake.rest_endpoint}")
    print(f"  API key: {args.api_key}   timeline: {fake.base_url}/timeline")
    for model_type, run_id in runs.items():
        print(f"  model run {run_id:<40} {model_type} (model id {args.model_id})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    printed = 0

    def print_new() -> int:
        lines = fake.timeline().splitlines()
        if lines and lines[0].startswith("(nothing"):
            return printed
        for line in lines[printed:]:
            print(line, flush=True)
        return len(lines)

    while not stop.is_set():
        if not args.quiet:
            printed = print_new()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    if not args.quiet:
        print_new()  # what arrived since the last look, before going away
    await fake.stop()


def main(argv: Sequence[str]) -> int:
    asyncio.run(serve(parser().parse_args(list(argv))))
    return 0
