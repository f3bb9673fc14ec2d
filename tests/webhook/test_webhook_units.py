"""Pure parts of the app: ModelRun bodies and idempotency, the template answer, settings, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lbtrain.kube import ApiError, ApiUnreachable, WatchEvent
from lbtrain.logs import JsonFormatter, get_logger, log_context
from lbtrain.resources.catalogue import Catalogue, Listing, listing_of
from lbtrain_webhook.cli import build_parser, settings_from
from lbtrain_webhook.modelruns import build_model_run, differences
from lbtrain_webhook.payload import ModelRunRequest
from lbtrain_webhook.secret_store import SecretError, SecretStore
from lbtrain_webhook.settings import Settings, SettingsError
from lbtrain_webhook.templates import TemplateCache


# --- ModelRun objects --------------------------------------------------------------------------
def test_model_run_object_for_a_plain_id():
    obj = build_model_run(ModelRunRequest("clr8x6y0a0001", "Text_multi_classification", "m1"))
    meta = obj["metadata"]
    assert meta["name"] == "clr8x6y0a0001"
    assert meta["labels"]["lbtrain.io/model-run-id"] == "clr8x6y0a0001"
    assert meta["labels"]["lbtrain.io/model-type"] == "Text_multi_classification"
    assert meta["annotations"]["lbtrain.io/model-run-id"] == "clr8x6y0a0001"
    assert meta["finalizers"] == ["lbtrain.io/labelbox-final-status"]  # the operator's
    assert obj["spec"] == {
        "modelRunId": "clr8x6y0a0001",
        "modelType": "Text_multi_classification",
        "modelId": "m1",
    }


def test_model_run_object_for_an_odd_id_and_type():
    obj = build_model_run(ModelRunRequest("Run #1 ✓", "My model"))
    meta = obj["metadata"]
    assert meta["name"].startswith("mr-run-1-")
    assert "lbtrain.io/model-run-id" not in meta["labels"]  # not a valid label value
    assert meta["annotations"]["lbtrain.io/model-run-id"] == "Run #1 ✓"
    assert meta["labels"]["lbtrain.io/model-type"] == "My_model"
    assert meta["annotations"]["lbtrain.io/model-type"] == "My model"


def test_differences():
    req = ModelRunRequest("a", "ner", "m1")
    assert differences({"modelRunId": "a", "modelType": "ner", "modelId": "m1"}, req) == []
    extra = {"modelRunId": "a", "modelType": "ner", "modelId": "m1", "hyperparameters": {"x": 1}}
    assert differences(extra, req) == []
    assert differences({"modelRunId": "a", "modelType": "ner"}, req) == ["modelId"]
    assert differences({"modelRunId": "b", "modelType": "bounding_box", "modelId": "m1"}, req) == [
        "modelRunId",
        "modelType",
    ]


# --- templates ---------------------------------------------------------------------------------
def template(name: str, model_type: str | None, description: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "x"}
    if model_type is not None:
        spec["modelType"] = model_type
    if description is not None:
        spec["description"] = description
    return {"metadata": {"name": name, "resourceVersion": "7"}, "spec": spec}


def test_entries_and_answer():
    assert listing_of(template("a", None)) is None
    entries = [
        Listing("text-multi", "Text_multi_classification", "text_multi_classification", "BERT"),
        Listing("b-ner", "ner", "ner", "", created="2026-01-01T00:00:00Z"),
        Listing("a-ner", "ner", "ner", "younger", created="2026-01-02T00:00:00Z"),
    ]
    assert Catalogue.of(entries).models_answer() == {
        "Text_multi_classification": {"description": "BERT"},
        "ner": {"description": ""},  # the older template keeps a contested name
    }


def test_cache_applies_events():
    cache = TemplateCache(None, "ns")  # type: ignore[arg-type]  # apply() needs no client
    cache.apply("ADDED", template("t1", "Text_multi_classification", "d"))
    cache.apply("ADDED", template("t2", "ner"))
    assert json.loads(cache.body()) == {
        "Text_multi_classification": {"description": "d"},
        "ner": {"description": ""},
    }
    cache.apply("DELETED", template("t2", "ner"))
    cache.apply("MODIFIED", template("t1", "Other"))
    cache.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert cache.known_types() == {"Other"}


# --- settings and CLI ----------------------------------------------------------------------------
def test_settings_check():
    Settings(inline_secrets=("s",)).check()
    for bad in (
        Settings(),
        Settings(inline_secrets=("s",), tls_cert=Path("c")),
        Settings(inline_secrets=("s",), port=9090, metrics_port=9090),
        Settings(inline_secrets=("s",), max_body_bytes=10),
    ):
        with pytest.raises(SettingsError):
            bad.check()


def test_secrets_never_in_repr():
    assert "hunter2" not in repr(Settings(inline_secrets=("hunter2",)))
    assert "hunter2" not in repr(SecretStore(inline=["hunter2"]))


def test_cli_flags_and_env(tmp_path):
    env = {
        "LBTRAIN_WEBHOOK_SECRET": "one\ntwo\n",
        "LBTRAIN_WEBHOOK_PORT": "8443",
        "LBTRAIN_WEBHOOK_NAMESPACE": "from-env",
    }
    s = settings_from(["--namespace", "lbtrain", "--max-body-bytes", "2048"], env)
    assert (s.namespace, s.port, s.metrics_port, s.max_body_bytes) == ("lbtrain", 8443, 9090, 2048)
    assert s.inline_secrets == ("one", "two")
    s = settings_from(["--secret-file", "a", "--secret-file", "b"], {})
    assert s.secret_files == (Path("a"), Path("b"))
    with pytest.raises(SettingsError):
        settings_from([], {})
    with pytest.raises(SettingsError, match="LBTRAIN_WEBHOOK_PORT"):
        settings_from([], {"LBTRAIN_WEBHOOK_SECRET": "s", "LBTRAIN_WEBHOOK_PORT": "http"})
    assert "--secret-file" in build_parser({}).format_help()


def test_cli_help_exits_zero(capsys):
    from lbtrain.cli import main as lbtrain_main

    with pytest.raises(SystemExit) as info:
        lbtrain_main(["webhook", "--help"])
    assert info.value.code == 0
    assert "POST /model_run" in capsys.readouterr().out


# --- secret files --------------------------------------------------------------------------------
def test_secret_file_rotation(tmp_path):
    path = tmp_path / "secret"
    path.write_text("old\n")
    store = SecretStore([path])
    store.load()
    assert store.current() == (b"old",)
    path.write_text("old\nnew\n")
    assert store.reload_if_changed()
    assert store.current() == (b"old", b"new")
    path.write_text("new\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    assert store.reload_if_changed()
    assert store.current() == (b"new",)
    assert not store.reload_if_changed()


def test_unreadable_file_keeps_last_secrets(tmp_path, caplog):
    path = tmp_path / "secret"
    path.write_text("s1\n")
    store = SecretStore([path], inline=["env"])
    store.load()
    path.unlink()
    store.reload_if_changed()
    assert set(store.current()) == {b"env", b"s1"}
    assert "s1" not in caplog.text


def test_missing_file_at_start_is_an_error(tmp_path):
    with pytest.raises(SecretError):
        SecretStore([tmp_path / "nope"]).load()


# --- logs ----------------------------------------------------------------------------------------
def test_json_logs_carry_context_and_mask_signatures():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lbtrain.webhook.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log = get_logger("lbtrain.webhook.test-json")
        with log_context(model_run_id="mr-1"):
            log.info("got sha1=0123456789abcdef0123456789abcdef01234567", extra={"status": 201})
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["model_run_id"] for line in lines] == ["mr-1", "mr-1"]
    assert "0123456789abcdef" not in lines[0]["message"]
    assert lines[0]["status"] == 201
    assert lines[1]["exception"] == "ValueError: boom"
    assert "Traceback" not in stream.getvalue()


def test_json_logs_write_what_orjson_refuses():
    """orjson writes the lines; what it refuses still comes out, through the json module."""
    formatter = JsonFormatter()
    record = logging.LogRecord("lbtrain.test", logging.INFO, "", 0, "odd \ud800", (), None)
    record.counts = {1: "one"}
    record.big = 2**70
    line = json.loads(formatter.format(record))
    assert line["counts"] == {"1": "one"}
    assert line["big"] == 2**70
    assert line["message"] == "odd \ud800"


class ScriptedKube:
    """Just enough of KubeClient for the cache loop: list answers and scripted watch outcomes."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.lists = 0
        self.watched_from: list[str | None] = []

    async def list(self, res: Any, namespace: str, **_: Any) -> dict[str, Any]:
        self.lists += 1
        rv = str(10 * self.lists)
        items = [template(f"t{i}", f"type{i}") for i in range(self.lists)]
        return {"metadata": {"resourceVersion": rv}, "items": items}

    async def watch(self, res: Any, namespace: str, **kwargs: Any):
        self.watched_from.append(kwargs.get("resource_version"))
        step = self.script.pop(0) if self.script else "hang"
        if step == "hang":
            await asyncio.sleep(3600)
        if isinstance(step, BaseException):
            raise step
        await asyncio.sleep(1.1)  # a normal watch lasts a while, then the server ends it
        for event in step:
            yield WatchEvent(*event)


async def test_cache_loop_resumes_relists_on_410_and_recovers_from_outages():
    added = template("new", "Added")
    added["metadata"]["resourceVersion"] = "99"
    kube = ScriptedKube(
        [
            [("ADDED", added)],  # a normal watch: one event, then the server ends it
            ApiError(410, "Expired", "too old resource version"),
            ApiUnreachable("connection refused"),
        ]
    )
    cache = TemplateCache(kube, "ns", backoff_initial=0.01, backoff_max=0.02)  # type: ignore[arg-type]
    task = asyncio.create_task(cache.run())
    try:
        await cache.wait_synced(2)
        for _ in range(400):
            if len(kube.watched_from) >= 4 and cache.ready:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    # list (rv 10) -> watch from 10 -> resumed from the event's rv 99 -> 410: re-list (rv 20)
    # -> watch from 20 -> unreachable: re-list (rv 30) after a backoff -> watch from 30
    assert kube.watched_from[:4] == ["10", "99", "20", "30"]
    assert kube.lists == 3
    assert cache.ready
    assert cache.known_types() == {"type0", "type1", "type2"}
