"""Labelbox's reference model-training server, for `webhook_bench.py`: the FastAPI coordinator
that Labelbox's documentation points to ("customize your model training pipeline on top of our
reference implementation"), run under uvicorn in its own process.

It follows `Labelbox/model-training` at 721f51e1d19ae1cad43c1dbcf8924578edbec037 (2022-05-31),
`src/coordinator/coordinator.py`: the same FastAPI app, the same `GET /models` and
`POST /model_run` handlers with their HMAC checks (`hmac.new(...).hexdigest()` compared with
`!=`), the same payload validation, the same background task that runs the pipeline in
Starlette's thread pool, the same "uvicorn" logger at DEBUG with its INFO line per request, and
`uvicorn.run(app, host=..., port=...)` with uvicorn's defaults (access log on). Its requirements
install `fastapi[all]`, which brings `uvicorn[standard]` (uvloop and httptools), so this is
what a deployment of it runs. That repository has no licence file: this module is written from
its behaviour, not copied.

What differs, and why:
- The pipelines (`src/coordinator/config.py`) start Vertex AI jobs; here each one's
  `parse_args` and `run` do nothing, and they are named after the benchmark's TrainingTemplates.
- `validate_payload` also calls the Labelbox API (`Client(api_key).get_model_run(...)`) for
  every request; nothing beyond 127.0.0.1 is reachable here, so that call is left out (it would
  only make the reference slower).
- It listens on 127.0.0.1 and a given port, and its logs (stdout and stderr) go to /dev/null,
  as lbtrain's do in the benchmark.
"""

import datetime
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

import uvicorn
from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool


class Pipeline:
    """Stands in for a Vertex AI pipeline of the reference: accepts its arguments, does nothing."""

    def parse_args(self, data: dict[str, Any]) -> None:
        return None

    def run(self, data: dict[str, Any]) -> None:
        return None

    def update_status(self, *args: Any, **kwargs: Any) -> None:
        return None


# The reference reads these in its config.py when it is imported; `serve` sets them here.
SERVICE_SECRET = ""
pipelines: dict[str, Pipeline] = {}

logger = logging.getLogger("uvicorn")
logger.setLevel(logging.DEBUG)
app = FastAPI()


async def run(json_data: dict[str, Any]) -> None:
    pipeline = json_data["model_type"]
    try:
        await run_in_threadpool(pipelines[pipeline].run, json_data)
    except Exception as e:
        pipelines[pipeline].update_status("FAILED", json_data["model_run_id"], error_message=str(e))


@app.get("/models")
async def models(x_hub_signature: str = Header(None)) -> dict[str, Any]:
    computed_signature = hmac.new(SERVICE_SECRET.encode(), digestmod=hashlib.sha1).hexdigest()
    if x_hub_signature != "sha1=" + computed_signature:
        raise HTTPException(
            status_code=401,
            detail="Error: computed_signature does not match signature provided in the headers",
        )
    return {k: {} for k in pipelines}


@app.post("/model_run")
async def model_run(
    request: Request,
    background_tasks: BackgroundTasks,
    x_hub_signature: str = Header(None),
) -> None:
    req = await request.body()
    computed_signature = hmac.new(
        SERVICE_SECRET.encode(), msg=req, digestmod=hashlib.sha1
    ).hexdigest()
    if x_hub_signature != "sha1=" + computed_signature:
        raise HTTPException(
            status_code=401,
            detail="Error: computed_signature does not match signature provided in the headers",
        )
    data = json.loads(req.decode("utf8"))
    logger.info(f"Training job request recieved. Params: {data}")
    validate_payload(data)
    background_tasks.add_task(run, data)


def validate_payload(data: dict[str, Any]) -> None:
    valid_pipelines = list(pipelines.keys())
    if "modelType" not in data:
        raise KeyError(
            "Must provide `modelType` key indicating which pipeline to run. "
            f"Should be one of: {valid_pipelines}"
        )
    if data["modelType"] not in pipelines:
        raise ValueError(
            f"Unknown pipeline `{data['modelType']}`. Expected one of {valid_pipelines}"
        )
    if "modelRunId" not in data:
        raise KeyError("Must provide `modelRunId`")
    data["model_type"] = data["modelType"]
    data["model_run_id"] = data["modelRunId"]
    if "job_name" not in data:
        now = str(datetime.datetime.now()).replace(" ", "_")
        data["job_name"] = f"{data['model_type']}_{now}"
    # The reference checks the model run with the Labelbox API here (see the docstring).
    pipelines[data["model_type"]].parse_args(data)


@app.get("/ping")
def health_check() -> str:
    return "pong"


def serve(port: int, secret: str, model_types: Iterable[str]) -> None:
    """Run the reference coordinator on 127.0.0.1:`port` until terminated, logging to /dev/null."""
    global SERVICE_SECRET
    SERVICE_SECRET = secret
    pipelines.update({name: Pipeline() for name in model_types})
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    uvicorn.run(app, host="127.0.0.1", port=port)
