"""The trainer's export stage against a plain parallel download of the same URLs.

    .venv/bin/python bench/export_bench.py [--cases png:2000,png:20000,jpeg:2000]
                                           [--servers keepalive,http10]
                                           [--repeats 3] [--rss 10000,100000]
    .venv/bin/python bench/export_bench.py --smoke   # seconds: checks the bench still runs

Media servers (``lbtrain_dev.media_server``: threaded ``http.server``) run in their own
processes on 127.0.0.1 and serve synthetic 320x240 PNGs (~124 kB) and 4000x3000 JPEGs (~3.1 MB)
under a distinct URL per row; each case runs against each of ``--servers``: ``keepalive``
(HTTP/1.1 keep-alive, ``TCP_NODELAY``, as object stores) and ``http10`` (HTTP/1.0, one
connection per file, Nagle's algorithm on: a plain ``python -m http.server``, and object stores
behind proxies or CDNs that close connections). A fake Labelbox (the real ``labelbox`` SDK talks
to it) runs in this process. For each case, alternating the order in each repeat (and with the
disk settled before every step, see ``settle``):

- **export**: ``python -m lbtrain trainer export`` as a subprocess, configured by the
  environment as the operator configures the container (production image classification:
  ``max_image_side`` 1024, ``download_concurrency`` 16), timed from the process start to its
  exit: interpreter start, the SDK, the Labelbox export, every download and store, the index;
- **keep-alive fetch**: 16 threads, each with its own ``http.client`` keep-alive connection
  (reopened per file by an ``http10`` server), reading every body into memory (no file written,
  nothing decoded);
- **keep-alive download**: the same, each body also written to a file (a plain download);
- **urllib fetch**: 16 threads of ``urllib.request.urlopen`` (a new connection per file), the
  baseline of the issue that asked for this benchmark.

Ratios are baseline time / export time per repeat, and the medians are printed. Then the peak
RSS (``ru_maxrss`` from ``wait4``, taken by a small launcher process; see ``LAUNCHER``) of the
export and of the prepare stage for text rows
(``text_single_classification``, small model: inline texts, a WordPiece tokenizer trained in
prepare). Everything shares the machine, so it prints ``nproc``, the CPU and the load average.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.ids import run_id
from bench.lib.machine import cpu_model, load, revision, utc_now
from lbtrain import contract
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_trainer import synthetic

API_KEY = "bench-key"
THREADS = 16
REPO = Path(__file__).resolve().parents[1]


@dataclass
class StageRun:
    seconds: float
    max_rss_mib: float
    cpu_s: float
    returncode: int
    log_tail: str


def image_rows(run_id: str, base: str, kind: str, n: int, offset: int) -> list[dict[str, Any]]:
    suffix = "png" if kind == "png" else "jpg"
    rows = []
    for i in range(n):
        answer = "a" if i % 2 else "b"
        run = {
            "labels": [
                {
                    "id": f"lbl-{i}",
                    "annotations": {
                        "objects": [],
                        "classifications": [{"name": "q", "radio_answer": {"name": answer}}],
                    },
                }
            ],
            "split": "training",
        }
        rows.append(
            {
                "data_row": {
                    "id": f"dr-{i:06d}",
                    "row_data": f"{base}/{kind}/{offset + i}.{suffix}",
                },
                "experiments": {"model-1": {"runs": {run_id: run}}},
            }
        )
    return rows


def stage_env(
    fake: FakeLabelbox, run_id: str, model_type: str, ws: Path, hp: dict[str, Any]
) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "HF_HUB_OFFLINE": "1",
        contract.ENV_MODEL_RUN_ID: run_id,
        contract.ENV_MODEL_TYPE: model_type,
        contract.ENV_MODEL_ID: "model-1",
        contract.ENV_LABELBOX_API_KEY: API_KEY,
        contract.ENV_LABELBOX_ENDPOINT: fake.endpoint,
        contract.ENV_LABELBOX_REST_ENDPOINT: fake.rest_endpoint,
        contract.ENV_WORKSPACE: str(ws),
        contract.ENV_ARTIFACTS: str(ws / "artifacts"),
        contract.ENV_HYPERPARAMETERS: json.dumps(hp),
        contract.ENV_TERMINATION_MESSAGE_PATH: str(ws / "termination-log"),
        contract.ENV_ALLOW_LOOPBACK_MEDIA: "true",  # the media servers are on 127.0.0.1
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


# Stages are started by this small launcher process, itself started before the benchmark holds
# any data: Linux keeps the larger of a process's RSS before and after exec() in ``ru_maxrss``,
# so a stage forked straight from this process would report this process's RSS (the fake
# Labelbox holds every row) as its own peak.
LAUNCHER = r"""
import json, os, subprocess, sys
for line in sys.stdin:
    req = json.loads(line)
    with open(req["log"], "wb") as log:
        proc = subprocess.Popen(req["argv"], env=req["env"], stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    reply = {"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss,
             "cpu_s": usage.ru_utime + usage.ru_stime}
    print(json.dumps(reply), flush=True)
"""


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], env: dict[str, str]) -> StageRun:
        """Run a stage as its own process; wall time, peak RSS and CPU from ``wait4``."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with tempfile.NamedTemporaryFile(suffix=".log") as log:
            started = time.perf_counter()
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": log.name}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            seconds = time.perf_counter() - started
            tail = Path(log.name).read_text(errors="replace")[-3000:]
        return StageRun(seconds, reply["maxrss_kib"] / 1024, reply["cpu_s"], reply["code"], tail)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


LAUNCHER_PROCESS: Launcher | None = None

# Every step starts from a settled disk: no dirty pages (``sync``), and no files deleted in the
# last ``settle_s`` seconds. Why: this machine's ext4 has no journal, and without one, ext4 will
# not reuse an inode freed in the last 60 s (360 s while its inode table block is dirty), so
# after many deletions each file created scans past them (perf: ext4_create -> find_inode_bit ->
# recently_deleted, with 16 threads then spinning on the directory's lock): ~10x the CPU per file.
# And a step that runs while the previous step's 2.5 GB are written back pays for that
# writeback. Deleting a repeat's files right before the next repeat made its first step 30%
# slower; keeping every file to the end instead slowed each repeat more than the last (page
# cache reclaim); 31 s of settling was not enough.
SETTLE_S = 65.0


def settle(root: Path, delete_and_wait_s: float | None = None) -> None:
    """Write back dirty pages; with ``delete_and_wait_s``, first delete every file under
    ``root``, and after the write-back wait that long (see above). Never timed."""
    if delete_and_wait_s is not None:
        for child in root.iterdir():
            subprocess.run(["rm", "-rf", str(child)], check=False)
    os.sync()
    time.sleep(delete_and_wait_s or 0)


BYTES_PER_IMAGE = {"png": 250_000, "jpeg": 3_300_000}  # export's copy + the download's, rounded up


def space_needed(cases: list[tuple[str, int]]) -> int:
    """Bytes on disk at once: one repeat's export copy and download (the largest case's)."""
    return max(BYTES_PER_IMAGE[kind] * n for kind, n in cases)


def run_stage(stage: str, env: dict[str, str]) -> StageRun:
    assert LAUNCHER_PROCESS is not None
    argv = [sys.executable, "-m", "lbtrain", "trainer", stage, "--log-level", "INFO"]
    return LAUNCHER_PROCESS.run(argv, env)


def fetch_keepalive(urls: list[str], save_to: Path | None = None) -> float:
    """16 threads, a keep-alive connection each; with ``save_to``, each body is also written
    to a file there (a download, as ``curl -O`` makes)."""
    local = threading.local()

    def get(url: str) -> int:
        parts = urllib.parse.urlsplit(url)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        conn.request("GET", parts.path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        if save_to is not None:
            (save_to / parts.path.rsplit("/", 1)[-1]).write_bytes(body)
        return len(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        sum(pool.map(get, urls))
    return time.perf_counter() - started


def _fresh(path: Path) -> Path:
    subprocess.run(["rm", "-rf", str(path)], check=False)
    path.mkdir(parents=True)
    return path


def fetch_urllib(urls: list[str]) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(url: str) -> int:
        with opener.open(url) as response:
            return len(response.read())

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        sum(pool.map(get, urls))
    return time.perf_counter() - started


def bench_case(
    fake: FakeLabelbox,
    base: str,
    kind: str,
    n: int,
    repeats: int,
    root: Path,
    settle_s: float,
    server: str = "keepalive",
) -> dict[str, Any]:
    results: dict[str, list[float]] = {
        "export": [],
        "keepalive": [],
        "download": [],
        "urllib": [],
        "cpu": [],
    }
    rss: list[float] = []
    for rep in range(repeats):
        offset = rep * n  # fresh URLs each repeat
        rid = run_id(f"{kind}-{n}-{server}", rep)
        rows = image_rows(rid, base, kind, n, offset)
        fake.add_model_run(rid, model_id="model-1", rows=rows)
        urls = [r["data_row"]["row_data"] for r in rows]
        ws = root / rid
        env = stage_env(fake, rid, "image_single_classification", ws, {})
        steps: list[tuple[str, Callable[[], float]]] = [
            ("keepalive", functools.partial(fetch_keepalive, urls)),
            ("download", functools.partial(fetch_keepalive, urls, _fresh(ws / "plain"))),
            ("urllib", functools.partial(fetch_urllib, urls)),
        ]

        def export(env: dict[str, str] = env) -> float:
            done = run_stage("export", env)
            if done.returncode != 0:
                raise SystemExit(f"export failed ({done.returncode}):\n{done.log_tail}")
            results["cpu"].append(done.cpu_s)
            rss.append(done.max_rss_mib)
            print("   ", "\n    ".join(done.log_tail.strip().splitlines()[-6:]), flush=True)
            return done.seconds

        steps.insert(rep % 4, ("export", export))
        for name, step in steps:
            settle(root)
            seconds = step()
            results[name].append(seconds)
            print(
                f"  {kind} {n} {server} rep {rep}: {name} {seconds:.2f}s"
                f" ({n / seconds:,.0f} files/s)",
                flush=True,
            )
        settle(root, settle_s)

    def ratios(name: str) -> list[float]:
        return [b / e for b, e in zip(results[name], results["export"], strict=True)]

    ratio_ka, ratio_dl, ratio_ul = ratios("keepalive"), ratios("download"), ratios("urllib")
    return {
        "case": f"{kind}:{n}",
        "server": server,
        "export_s": results["export"],
        "keepalive_s": results["keepalive"],
        "urllib_s": results["urllib"],
        "export_cpu_s": results["cpu"],
        "export_rss_mib": rss,
        "ratio_keepalive": ratio_ka,
        "ratio_urllib": ratio_ul,
        "download_s": results["download"],
        "ratio_download": ratio_dl,
        "median_ratio_download": statistics.median(ratio_dl),
        "median_download_files_s": n / statistics.median(results["download"]),
        "median_ratio_keepalive": statistics.median(ratio_ka),
        "median_ratio_urllib": statistics.median(ratio_ul),
        "median_export_files_s": n / statistics.median(results["export"]),
        "median_keepalive_files_s": n / statistics.median(results["keepalive"]),
        "median_urllib_files_s": n / statistics.median(results["urllib"]),
    }


def bench_rss(fake: FakeLabelbox, n: int, root: Path) -> dict[str, Any]:
    rid = run_id("rss", n)
    data = synthetic.make_dataset("text_single_classification", n, model_run_id=rid)
    fake.add_model_run(rid, model_id="model-1", rows=data.rows)
    del data
    ws = root / rid
    env = stage_env(fake, rid, "text_single_classification", ws, {"model_size": "small"})
    out: dict[str, Any] = {"rows": n}
    for stage in ("export", "prepare"):
        done = run_stage(stage, env)
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed ({done.returncode}):\n{done.log_tail}")
        out[f"{stage}_rss_mib"] = done.max_rss_mib
        out[f"{stage}_s"] = done.seconds
        print(
            f"  rss {n}: {stage} {done.seconds:.1f}s, peak RSS {done.max_rss_mib:.0f} MiB",
            flush=True,
        )
    fake.add_model_run(rid, model_id="model-1", rows=[])  # free the fake's copy
    subprocess.run(["rm", "-rf", str(ws)], check=False)
    return out


SMOKE = {"cases": "png:16", "repeats": 1, "rss": "100", "settle": 0.0}
# The media server's flags per --servers name.
SERVERS = {"keepalive": [], "http10": ["--http10", "--nagle"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", default="png:2000,png:20000,jpeg:2000")
    parser.add_argument(
        "--servers",
        default="keepalive,http10",
        help=f"media servers to run each case against, of {', '.join(SERVERS)}",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jpeg-repeats", type=int, default=1)
    parser.add_argument("--rss", default="10000,100000")
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_S,
        help="seconds to wait after deleting a repeat's files, before the next (see settle())",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="folder for the export's workspaces and the downloads (default: the system's temp"
        " folder; /dev/shm puts them in memory). A repeat holds ~0.25 GB per 1,000 PNGs and ~3.3 GB"
        " per 1,000 JPEGs (the export's copy and the download's), deleted before the next.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help=f"tiny cases ({SMOKE}): checks the bench still runs"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",") if c]
    servers = [name for name in args.servers.split(",") if name]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown --servers {', '.join(unknown)}: choose from {', '.join(SERVERS)}")
    machine: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "date": utc_now(),
        "commit": revision(),
        "load_before": load(),
        "workspace": str(args.workspace or tempfile.gettempdir()),
        "settle_s": args.settle,
    }
    print(json.dumps(machine), flush=True)
    needed = space_needed(cases)
    free = shutil.disk_usage(machine["workspace"]).free
    if needed > free * 0.9:
        parser.error(
            f"the run needs ~{needed / 1e9:.0f} GB in {machine['workspace']} and"
            f" {free / 1e9:.0f} GB is free: fewer --cases or --repeats, or another --workspace"
        )
    global LAUNCHER_PROCESS
    LAUNCHER_PROCESS = Launcher()
    jpegs = 8 if any(kind == "jpeg" for kind, _ in cases) else 0
    media_servers: dict[str, subprocess.Popen[str]] = {}
    bases: dict[str, str] = {}
    for name in servers:
        process = media_servers[name] = subprocess.Popen(
            [
                *(sys.executable, "-m", "lbtrain_dev.media_server"),
                *("--png", "32", "--jpeg", str(jpegs), *SERVERS[name]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        bases[name] = process.stdout.readline().strip()
    report: dict[str, Any] = {"machine": machine, "cases": [], "rss": []}
    try:
        with (
            FakeLabelbox.in_thread(api_key=API_KEY) as fake,
            tempfile.TemporaryDirectory(dir=args.workspace) as tmp,
        ):
            fake.export_chunk_bytes = 4 * 1024 * 1024
            settle(Path(tmp), args.settle if cases else 0)  # whatever ran before this run
            for kind, n in cases:
                repeats = args.jpeg_repeats if kind == "jpeg" else args.repeats
                for name, base in bases.items():
                    result = bench_case(fake, base, kind, n, repeats, Path(tmp), args.settle, name)
                    report["cases"].append(result)
                    print(json.dumps(result), flush=True)
            for n in [int(x) for x in args.rss.split(",") if x]:
                result = bench_rss(fake, n, Path(tmp))
                report["rss"].append(result)
                print(json.dumps(result), flush=True)
    finally:
        for process in media_servers.values():
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
        LAUNCHER_PROCESS.close()
    machine["load_after"] = load()
    machine["bench_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
