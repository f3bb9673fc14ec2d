"""What a `webhook_bench.py` run measured, and how it is written up in `bench/README.md`.

A `Cell` is one server x endpoint x concurrency, summed over its rounds; `report` turns the cells
into the README's tables and checks them against the goals of issue 15; the rest replaces the
README's blocks (one per placement) and leaves the hand-written text around them alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.lib.readme import write_block
from bench.lib.stats import quantile, ratio

ENDPOINTS = ("GET /models", "POST /model_run")
FLOORS = ("relay", "bare", "aiohttp")  # bench/floor_webhooks.py, with --floors
GET_GOAL = 2.0  # lbtrain's GET /models rate over the reference's, at every concurrency
POST_RATE_GOAL = 0.9  # lbtrain's POST /model_run rate over api-direct's, at every concurrency
POST_P99_GOAL = 1.2  # lbtrain's POST /model_run p99 over api-direct's, at most


Cells = dict[tuple[str, str, int], "Cell"]


@dataclass
class Cell:
    """One server x endpoint x concurrency, summed over its rounds."""

    server: str
    endpoint: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds used

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def ms(self, q: float) -> float:
        return quantile(self.latencies, q) * 1000

    def cpu_us(self, *procs: str) -> float:
        used = sum(self.cpu.get(p, 0.0) for p in procs)
        return used / self.requests * 1e6 if self.requests else float("nan")


def report(cells: Cells, levels: list[int]) -> str:
    def get(server: str, endpoint: str, clients: int) -> Cell:
        """The cell, or an empty one (NaN figures) for a server not run (the reference without
        the `bench` extra, in `--smoke`)."""
        return cells.get((server, endpoint, clients)) or Cell(server, endpoint, clients)

    lines = [
        "| endpoint | clients | lbtrain req/s | p50 ms | p99 ms | CPU µs/req "
        "| reference req/s | p50 ms | p99 ms | CPU µs/req | req/s ratio | p99 ratio "
        "| generator CPU µs/req: lbtrain / reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint in ENDPOINTS:
        for c in levels:
            ours, ref = get("lbtrain", endpoint, c), get("reference", endpoint, c)
            lines.append(
                f"| `{endpoint}` | {c} | {ours.rps:,.0f} | {ours.ms(0.5):.2f} | "
                f"{ours.ms(0.99):.2f} | {ours.cpu_us('lbtrain'):,.0f} | {ref.rps:,.0f} | "
                f"{ref.ms(0.5):.2f} | {ref.ms(0.99):.2f} | {ref.cpu_us('reference'):,.0f} | "
                f"{ours.rps / ref.rps:.2f} | {ours.ms(0.99) / ref.ms(0.99):.2f} | "
                f"{ours.cpu_us('generator'):,.0f} / {ref.cpu_us('generator'):,.0f} |"
            )
    lines += [
        "",
        "`POST /model_run` persisted: the same ModelRun creates sent by the load generator "
        "straight to the API server (`api-direct`, no webhook), next to the webhook's; CPU per "
        "request of the webhook, of kube-apiserver + etcd and of the load generator.",
        "",
        "| clients | api-direct req/s | p50 ms | p99 ms | lbtrain req/s | p50 ms | p99 ms "
        "| req/s ratio | p99 ratio | webhook CPU µs/req | apiserver+etcd CPU µs/req: api-direct "
        "| lbtrain | generator CPU µs/req: api-direct | lbtrain |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        api, ours = get("api-direct", "POST /model_run", c), get("lbtrain", "POST /model_run", c)
        lines.append(
            f"| {c} | {api.rps:,.0f} | {api.ms(0.5):.2f} | {api.ms(0.99):.2f} | "
            f"{ours.rps:,.0f} | {ours.ms(0.5):.2f} | {ours.ms(0.99):.2f} | "
            f"{ratio(ours.rps, api.rps):.2f} | {ratio(ours.ms(0.99), api.ms(0.99)):.2f} | "
            f"{ours.cpu_us('lbtrain'):,.0f} | {api.cpu_us('kube-apiserver', 'etcd'):,.0f} | "
            f"{ours.cpu_us('kube-apiserver', 'etcd'):,.0f} | {api.cpu_us('generator'):,.0f} | "
            f"{ours.cpu_us('generator'):,.0f} |"
        )
    floors = (FLOORS[0], "POST /model_run", levels[0]) in cells
    if floors:
        lines += ["", *floor_table(cells, levels)]
    errors = sum(cell.errors for cell in cells.values())
    get_ratios = [
        ratio(get("lbtrain", "GET /models", c).rps, get("reference", "GET /models", c).rps)
        for c in levels
    ]
    posts = [
        (get("lbtrain", "POST /model_run", c), get("api-direct", "POST /model_run", c))
        for c in levels
    ]
    rate_ratios = [ratio(ours.rps, api.rps) for ours, api in posts]
    p99_ratios = [ratio(ours.ms(0.99), api.ms(0.99)) for ours, api in posts]

    def verdict(values: list[float], ok: bool) -> str:
        shown = ", ".join(f"{v:.2f}" for v in values)
        return f"{'met' if ok else 'not met'} ({shown} at {', '.join(map(str, levels))} clients)"

    lines += [
        "",
        f"Non-2xx answers in the whole run: {errors}.",
        "",
        "Goals:",
        f"- `GET /models` at least {GET_GOAL:g}x the reference's rate at every concurrency: "
        + verdict(get_ratios, min(get_ratios) >= GET_GOAL)
        + ".",
        f"- `POST /model_run` at least {POST_RATE_GOAL:g} of api-direct's rate: "
        + verdict(rate_ratios, min(rate_ratios) >= POST_RATE_GOAL)
        + f"; p99 within {POST_P99_GOAL:g}x api-direct's: "
        + verdict(p99_ratios, max(p99_ratios) <= POST_P99_GOAL)
        + ".",
    ]
    if floors:
        for floor, who in (
            ("relay", "a TCP relay in front of the API server (any server in between)"),
            ("aiohttp", "the aiohttp floor (any webhook on `aiohttp.web`)"),
        ):
            ratios = [
                ratio(
                    get(floor, "POST /model_run", c).rps,
                    get("api-direct", "POST /model_run", c).rps,
                )
                for c in levels
            ]
            lines.append(
                f"- The same POST rate goal for {who}: "
                + verdict(ratios, min(ratios) >= POST_RATE_GOAL)
                + "."
            )
    return "\n".join(lines)


def floor_table(cells: Cells, levels: list[int]) -> list[str]:
    """The floors next to lbtrain: rate over api-direct's, own CPU, and what each costs the API
    server per create (which rises as creates arrive further apart: see bench/README.md)."""
    servers = (*FLOORS, "lbtrain")
    names = " | ".join(servers)
    lines = [
        "`--floors` (`bench/floor_webhooks.py`): `relay` forwards api-direct's own requests to "
        "the API server unchanged (TLS end to end, nothing parsed): what standing between a "
        "client and the API server costs. `bare` and `aiohttp` do only what a POST cannot leave "
        "out (HMAC, the webhook's parsing, the same ModelRun created through lbtrain's "
        "`KubeClient`, the answer; no errors, metrics or logs), with no framework and on "
        "aiohttp's web framework: the least any Python webhook, and any `aiohttp.web` one, spends.",
        "",
        f"| clients | api-direct req/s | req/s over api-direct's: {names} | lbtrain / aiohttp "
        f"| CPU µs/req: {names} | apiserver+etcd CPU µs per create: api-direct | {names} |",
        "|---:|---:|" + "---:|" * (2 * len(servers) + 2 + len(servers)),
    ]
    plane = ("kube-apiserver", "etcd")
    for c in levels:
        api = cells[("api-direct", "POST /model_run", c)]
        row = [cells[(s, "POST /model_run", c)] for s in servers]
        aio, ours = row[servers.index("aiohttp")], row[-1]
        rates = " | ".join(f"{ratio(cell.rps, api.rps):.2f}" for cell in row)
        cpus = " | ".join(f"{cell.cpu_us(s):,.0f}" for cell, s in zip(row, servers, strict=True))
        planes = " | ".join(f"{cell.cpu_us(*plane):,.0f}" for cell in row)
        lines.append(
            f"| {c} | {api.rps:,.0f} | {rates} | {ours.rps / aio.rps:.2f} | {cpus} | "
            f"{api.cpu_us(*plane):,.0f} | {planes} |"
        )
    return lines


SECTION_INTRO = """\
`bench/webhook_bench.py` starts a testbed control plane (etcd + kube-apiserver from
`lbtrain_dev.testbed`; etcd runs with `--unsafe-no-fsync`, so a production etcd adds its fsync to
every POST), installs the CRDs and six TrainingTemplates, and drives, each in its own process:

- **lbtrain**: the real webhook, started as `lbtrain webhook` starts it; `GET /models` from the
  watch cache, `POST /model_run` creates a ModelRun (new Labelbox-shaped ids per request) before
  it answers; JSON logs at INFO (one line per POST; successful GETs log at DEBUG) and metrics on.
- **reference**: Labelbox's reference coordinator (`Labelbox/model-training`, the FastAPI app the
  Labelbox docs build on) under uvicorn with uvloop and httptools, as its `fastapi[all]`
  requirement installs it (`bench/labelbox_coordinator.py`: its handlers, HMAC checks, payload
  validation and background task; its Vertex AI pipelines and its Labelbox API lookup per POST
  are left out); no persistence; its access log on, as uvicorn's is by default.
- **api-direct**: the same ModelRun creates sent by the load generator straight to the API
  server (no webhook): the cost of persisting alone.
- **relay**, **bare** and **aiohttp** (`--floors`, POST only): `bench/floor_webhooks.py`.
  `relay` forwards api-direct's own requests to the API server unchanged (TLS end to end): the
  cost of any server in between. `bare` and `aiohttp` do only what a POST cannot leave out
  (HMAC, parsing, the same create through lbtrain's `KubeClient`, the answer): `bare` with no
  HTTP framework, the least any Python server spends; `aiohttp` on aiohttp's web framework with
  one route, the least any webhook built on `aiohttp.web` (as lbtrain's is) spends. Bounds, not
  products.

C closed-loop clients in the benchmark process send requests back to back, each on its own
keep-alive connection, through a minimal HTTP/1.1 client (the same for every target, TLS to the
API server), so that the generator's own CPU stays well below any server's. The load generator,
the servers and the control plane all share the machine (and other people's jobs), so latencies
are pessimistic; CPU µs per request (from /proc) is the steadier figure.
Rerun: `make bench-deps && .venv/bin/python bench/webhook_bench.py`.
"""


def write_section(text: str) -> None:
    """The shared placement's block of `## webhook` in bench/README.md."""
    write_block("webhook_bench.py", text, "## webhook")


def write_split_section(text: str) -> None:
    """The split placement's block, next to the shared one's."""
    write_block("webhook_bench.py --placement split", text, "## webhook")
