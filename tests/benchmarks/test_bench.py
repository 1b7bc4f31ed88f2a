"""The benchmark harness: a quick run of every kind of scenario (tiny N) accounts for every
message and reports what the report needs (ratios to the raw loop with and without
start-up, CPU per message, first message, default vs hand-tuned, heartbeat capacity, a
profile, the docs); the aggregation and the targets on made-up runs; the proxy's
``empty_receives`` that lets a stop skip the open long polls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from benchmarks.aggregate import Run, aggregate, latency_pairs
from benchmarks.harness import TUNED, Proxy
from benchmarks.report import cpu_spread, reaggregated
from benchmarks.result import Capacity, Result
from benchmarks.targets import evaluate
from tests.conftest import Aws
from tests.servers import ROOT


def _run_group(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``args`` in a process group of its own: on a timeout the whole group is killed (the
    benchmark's worker and raw-loop processes too, which a kill of the benchmark alone
    would leave running)."""
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_a_run_that_times_out_leaves_no_process_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    spawn = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); p.wait()"
    )
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _run_group([sys.executable, "-c", spawn], timeout=3)
    assert time.monotonic() - started < 10  # not held by a grandchild's open pipe
    child = Path(f"/proc/{pidfile.read_text()}/stat")
    deadline = time.monotonic() + 5
    while child.exists() and child.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.05)


# About 70 s alone on 2 cores, over the suite's 120 s beside the other test processes on a
# slow day: bounded by the subprocess's own 400 s instead.
@pytest.mark.timeout(420)
def test_quick_run_of_every_new_scenario(aws: Aws, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    docs = tmp_path / "docs"
    started = time.monotonic()
    result = _run_group(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--endpoint",
            aws.endpoint,
            "--quick",
            "--scenarios",
            "raw,noop,io,idempotency,fifo,startup,heartbeat",
            "--profile",
            "raw,noop-default,startup-worker",
            "--json",
            str(out),
            "--docs-dir",
            str(docs),
        ],
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads(out.read_text())
    results = {r["key"]: r for r in data["results"]}
    assert set(results) == {
        "raw",
        "noop-default",
        "noop-8x200",
        "noop-16x500",
        "raw-io",
        "io-default",
        "io-10x500",
        "io-20x1000",
        "noop-idempotent",
        "raw-fifo",
        "raw-fifo-attrs",
        "fifo",
        "fifo-default",
        "startup-raw",
        "startup-worker",
    }
    # One claim and one completion per message (a few more when a claim finds a holder).
    assert 2 <= results["noop-idempotent"]["extra"]["store_requests_per_message"] < 2.5
    for r in results.values():
        assert r["losses"] == 0, r
        assert r["duplicates"] == 0, r
        assert r["first_message"] > 0, r
        # Start-up included is always slower than excluded.
        assert 0 < r["rate_with_startup"] < r["rate"], r
        # CPU comes from /proc in 10 ms ticks: a run of a few hundredths of a second can
        # read 0 (the quick start-up runs move 50 messages).
        if r["seconds"] >= 0.5:
            assert r["cpu_ms_per_message"] > 0, r
        assert r["startup_cpu"] > 0, r
        assert 0.1 <= r["requests_per_message"] <= 2, r
    raw = results["raw"]
    assert raw["ratio"] == raw["ratio_with_startup"] == raw["cpu_ratio"] == raw["cpu_ratio_adj"] == 1.0
    assert raw["first_vs_raw"] == 0
    for key in ("noop-default", "noop-16x500", "io-default", "fifo"):
        r = results[key]
        for ratio in ("ratio", "ratio_with_startup", "cpu_ratio", "cpu_ratio_adj"):
            assert r[ratio] > 0, r
        assert r["first_vs_raw"] is not None
        assert r["extra"]["info_lines_per_message"] == 1.0  # the per-message line is on
        assert 0 < r["extra"]["window"]["host_busy"] <= 1
    for key in ("noop-default", "io-default"):
        assert results[key]["extra"]["x_best_tuned"] > 0
        assert results[key]["extra"]["x_best_tuned_with_startup"] > 0
    assert results["io-default"]["extra"]["x_raw_io"] > 0
    noop = results["noop-default"]
    # The proxy's count and the worker's own agree (the worker's adds its start and stop).
    assert abs(noop["requests_per_message"] - noop["worker_requests_per_message"]) * noop["messages"] <= 20
    assert results["fifo"]["extra"]["order_violations"] == 0
    # FIFO is judged against the raw loop on a FIFO queue of the same run.
    assert results["fifo"]["extra"]["x_raw_fifo"] > 0
    assert "order_violations" not in results["raw-fifo"]["extra"]  # the raw loop records no order
    assert results["raw-fifo-attrs"]["extra"]["x_raw_fifo"] > 0  # asking the worker's attributes
    assert results["startup-worker"]["first_vs_raw"] is not None
    (capacity,) = data["capacity"]
    assert capacity["held"] == capacity["in_flight"]
    assert capacity["extend_calls"] > 0
    assert capacity["overdue"] == capacity["duplicates"] == capacity["visible_max"] == capacity["losses"] == 0
    assert capacity["declared_capacity"] >= capacity["in_flight"]
    assert "waiting in the selector" in data["profiles"]["noop-default"]
    # Beside the raw loop's profile: own time per message by package, side by side.
    assert "worker (own code)" in data["profiles"]["noop-default"]
    assert "total without the wait" in data["profiles"]["noop-default"]
    assert "importing" in data["profiles"]["startup-worker"]
    text = (docs / "benchmarks.md").read_text()
    for heading in (
        "## Ratios to the raw loop",
        "## Targets",
        "## Heartbeat capacity",
        "## Where the CPU went",
    ):
        assert heading in text
    assert "| first message handled <= 0.2 s after the raw loop's |" in text
    if importlib.util.find_spec("matplotlib"):
        assert (docs / "benchmarks.png").stat().st_size > 1000
    assert time.monotonic() - started < 240


def _run(
    key: str, rep: int, rate: float, first: float, cpu_ms: float, n: int = 1000, proxy_ms: float = 0.1
) -> Run:
    seconds = n / rate
    return Run(
        key=key,
        scenario=key,
        rep=rep,
        messages=n,
        start=0.0,
        first=first,
        last=first + seconds,
        window_cpu=cpu_ms * n / 1000,
        startup_cpu=0.5,
        total_cpu=1.0,
        requests=200,
        worker_requests=None,
        rss=50.0,
        duplicates=0,
        losses=0,
        window={"host_busy": 0.95, "server_cpu": 0.5, "proxy_cpu": proxy_ms * n / 1000},
    )


def test_the_defaults_are_compared_with_the_best_setting_not_each_repetitions_fastest() -> None:
    # 8x200 runs 1000 msg/s in every repetition; 16x500 1100, 800, 900 (median 900): 8x200 is
    # the best setting, and the defaults' 1000, 900, 1000 are 1.0, 0.9, 1.0 of it: median 1.0.
    # Taking the faster setting in each repetition (1100, 1000, 1000) would give 0.91.
    rates = {
        "noop-default": (1000, 900, 1000),
        "noop-8x200": (1000, 1000, 1000),
        "noop-16x500": (1100, 800, 900),
    }
    runs = [_run(key, rep, rate, 1.0, 0.3) for key, reps in rates.items() for rep, rate in enumerate(reps)]
    runs += [_run("raw", rep, 1000, 0.7, 0.3) for rep in range(3)]
    by = {r.key: r for r in aggregate(runs, TUNED)}
    assert by["noop-default"].extra["x_best_tuned"] == 1.0


def test_ratios_are_taken_within_a_repetition_then_the_median() -> None:
    # The machine doubles its speed in repetition 1: each ratio within a repetition is 0.8.
    runs = [
        _run("raw", 0, 1000, 0.7, 0.3),
        _run("noop-default", 0, 800, 1.0, 0.36),
        _run("noop-16x500", 0, 1000, 0.9, 0.42),
        _run("raw", 1, 2000, 0.5, 0.3),
        _run("noop-default", 1, 1600, 0.8, 0.36),
        _run("noop-16x500", 1, 1000, 0.9, 0.42),
        _run("raw", 2, 1500, 0.6, 0.3),
        _run("noop-default", 2, 1200, 0.9, 0.36),
        _run("noop-16x500", 2, 2400, 0.9, 0.42),
    ]
    by = {r.key: r for r in aggregate(runs, TUNED)}
    d = by["noop-default"]
    assert d.ratio == 0.8
    assert d.cpu_ratio == 1.2
    assert d.first_vs_raw == 0.3
    assert d.rate == 1200  # the median of the absolute rates
    assert d.extra["x_best_tuned"] == 0.8  # 800/1000, 1600/1000, 1200/2400: median 0.8
    assert d.repetitions == 3
    assert by["raw"].ratio == 1.0
    targets = {t.name.split(" <=")[0].split(" >=")[0]: t for t in evaluate(list(by.values()), [])}
    cpu = targets["CPU per message"]
    assert cpu.ok is False  # 1.4x for 16x500 (0.42 vs 0.3)
    assert cpu.profile == "noop-16x500"
    assert "95% busy" in cpu.explanation
    assert targets["first message handled"].ok is False  # +0.3 s
    assert targets["no-op, default settings"].ok is False


def test_every_other_repetition_runs_in_reverse_order_so_drift_does_not_favour_one_side() -> None:
    from benchmarks.harness import repeated
    from benchmarks.run import in_order

    scenarios = repeated(16)
    keys = [s.key for s in scenarios]
    assert [s.key for s in in_order(scenarios, 0)] == keys
    assert [s.key for s in in_order(scenarios, 1)] == keys[::-1]
    assert [s.key for s in in_order(scenarios, 2)] == keys
    # As listed, each group's raw loop comes before the scenarios compared with it.
    for raw, worker in (("raw", "noop-default"), ("raw-fifo", "fifo"), ("raw-block", "block")):
        assert keys.index(raw) < keys.index(worker)
    assert keys == [s.key for s in scenarios]  # the list itself is left as it was


def test_cpu_per_message_is_judged_in_units_of_the_machines_speed() -> None:
    # Repetition 0: the machine is slow while the worker runs (its proxy needs 0.15 ms a
    # message against 0.1 for the raw loop): 0.36 plain is 1.2x, but 0.24 at the raw loop's
    # speed, 0.8x. Repetition 1: the machine is slow while the raw loop runs: 0.6x plain, 0.9x
    # adjusted. Repetition 2: steady, 1.0x both. Adjusted median 0.9x: met; plain 1.0x.
    runs = [
        _run("raw", 0, 1000, 0.5, 0.3),
        _run("noop-default", 0, 1000, 0.5, 0.36, proxy_ms=0.15),
        _run("raw", 1, 1000, 0.5, 0.4, proxy_ms=0.15),
        _run("noop-default", 1, 1000, 0.5, 0.24),
        _run("raw", 2, 1000, 0.5, 0.3),
        _run("noop-default", 2, 1000, 0.5, 0.3),
    ]
    (raw, default) = aggregate(runs, TUNED)
    assert raw.cpu_ratio_adj == 1.0
    assert default.cpu_ratio == 1.0  # 1.2, 0.6, 1.0
    assert default.cpu_ratio_adj == 0.9  # 0.8, 0.9, 1.0
    (cpu,) = [t for t in evaluate([raw, default], []) if t.name.startswith("CPU per message")]
    assert cpu.ok is True
    assert "noop-default: 0.90x adjusted to the machine, plain 1.00x (0.300 vs 0.300 ms)" in cpu.result
    slower = [_run("raw", 0, 1000, 0.5, 0.3), _run("noop-default", 0, 1000, 0.5, 0.75, proxy_ms=0.2)]
    (_, default) = aggregate(slower, TUNED)
    assert default.cpu_ratio_adj == 1.25  # 3.75 of the machine's units against 3.0
    no_proxy = [dataclasses.replace(r, window={}) for r in runs]
    (_, default) = aggregate(no_proxy, TUNED)
    assert default.cpu_ratio_adj is None
    (cpu,) = [t for t in evaluate(aggregate(no_proxy, TUNED), []) if t.name.startswith("CPU per message")]
    assert cpu.ok is True  # judged on the plain 1.0x
    assert "noop-default: 1.00x (0.300 vs 0.300 ms)" in cpu.result


def test_throughput_adjusted_to_the_machine_is_shown_not_judged() -> None:
    # FIFO: 0.8x plain, but the worker's run had the proxy at 0.15 ms a message against 0.1
    # for the raw loop's: 1.2x adjusted. The verdict stays on the plain ratio, even with the
    # server at 92% of its core in both runs (a rate times the proxy's CPU per message is the
    # proxy's share of a core: no measure independent of the rates).
    def bound(run: Run) -> Run:
        assert run.first is not None
        seconds = run.last - run.first
        return dataclasses.replace(
            run, window={**run.window, "seconds": seconds, "server_cpu": 0.92 * seconds}
        )

    runs = [
        bound(_run("raw", 0, 1000, 0.5, 0.3)),
        bound(_run("raw-fifo", 0, 1000, 0.5, 0.3)),
        bound(_run("fifo", 0, 800, 0.5, 0.3, proxy_ms=0.15)),
    ]
    by = {r.key: r for r in aggregate(runs, TUNED)}
    assert by["fifo"].extra["x_raw_fifo"] == 0.8
    assert by["fifo"].extra["x_raw_fifo_adj"] == 1.2
    assert by["fifo"].ratio_adj == 1.2
    (fifo,) = [t for t in evaluate(list(by.values()), []) if t.profile == "fifo"]
    assert fifo.ok is False
    assert fifo.result.endswith("; adjusted to the machine: 1.29x / 1.20x")  # with start-up / without


def test_the_fifo_target_says_what_asking_the_workers_attributes_costs_the_raw_loop() -> None:
    runs = [
        _run("raw", 0, 1000, 0.5, 0.3),
        _run("raw-fifo", 0, 1000, 0.5, 0.3),
        _run("raw-fifo-attrs", 0, 900, 0.5, 0.3),
        _run("fifo", 0, 850, 0.5, 0.3),
    ]
    (fifo,) = [t for t in evaluate(aggregate(runs, TUNED), []) if t.profile == "fifo"]
    assert fifo.ok is False
    assert (
        "the raw loop asking what the worker's receive asks (its attributes) reaches 0.93x / 0.90x "
        "of the raw loop on a FIFO queue, 100 groups" in fifo.result
    )


def test_the_raw_loop_asks_for_the_same_attributes_as_the_worker() -> None:
    from benchmarks.raw import WORKER_SYSTEM_ATTRIBUTES
    from worker.runtime.poller import SYSTEM_ATTRIBUTES

    assert WORKER_SYSTEM_ATTRIBUTES == SYSTEM_ATTRIBUTES


def test_reaggregating_a_run_recomputes_the_repeated_rows_only(tmp_path: Path) -> None:
    runs = [_run("raw", 0, 1000, 0.5, 0.3), _run("noop-default", 0, 800, 0.5, 0.36, proxy_ms=0.15)]
    stale = {"key": "noop-default", "scenario": "noop-default", "messages": 1000, "seconds": 1.0, "rate": 1.0}
    latency = {"key": "latency", "scenario": "latency", "messages": 10, "seconds": 1.0, "rate": 1.0}
    data = {
        "args": {"raw_concurrency": 16},
        "results": [stale, latency],
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    noop, kept = reaggregated(data)
    assert noop["rate"] == 800
    assert noop["cpu_ratio_adj"] == 0.8  # 2.4 of the machine's units against 3.0
    assert kept == latency


def test_the_report_states_the_runs_own_spread_plain_and_adjusted() -> None:
    # The raw loop's CPU per message follows the machine (proxy 0.1, 0.2, 0.1 ms): 0.3, 0.6,
    # 0.3 plain; 3.0 each adjusted.
    runs = [
        _run("raw", rep, 1000, 0.5, cpu, proxy_ms=px)
        for rep, (cpu, px) in enumerate([(0.3, 0.1), (0.6, 0.2), (0.3, 0.1)])
    ]
    text = cpu_spread({"runs": [dataclasses.asdict(r) for r in runs]})
    assert "varied by 35.4%-35.4% plain and 0.0%-0.0% adjusted" in text
    assert "1 configurations" in text
    assert cpu_spread({"runs": [dataclasses.asdict(r) for r in runs[:2]]}) == ""  # too few reps


def _latency(key: str, p50: float, p99: float) -> Result:
    return Result(key, 2000, 10.0, 200.0, key=key, extra={"p50_ms": p50, "p95_ms": p50, "p99_ms": p99})


def test_latency_is_judged_per_pair_against_the_raw_loop() -> None:
    # The server's latency doubles in the second pair; the worker is 5 ms (p50) and 20 ms
    # (p99) above the raw loop in every pair but the third (+30 / +100): medians +5 / +20.
    pairs = [
        (_latency("latency-raw", 50, 500), _latency("latency", 55, 520)),
        (_latency("latency-raw", 150, 800), _latency("latency", 155, 820)),
        (_latency("latency-raw", 60, 600), _latency("latency", 90, 700)),
    ]
    raw, worker = latency_pairs(pairs)
    assert raw.extra["p50_ms"] == 60
    assert worker.extra["p50_ms"] == 90
    assert worker.extra["p50_vs_raw_ms"] == 5
    assert worker.extra["p99_vs_raw_ms"] == 20
    assert worker.repetitions == 3
    (target,) = [t for t in evaluate([raw, worker], []) if t.name.startswith("latency")]
    assert target.ok is True
    assert "p50 +5 ms, p99 +20 ms (median of 3 pairs)" in target.result
    worse = [
        (r, dataclasses.replace(w, extra={**w.extra, "p50_ms": w.extra["p50_ms"] + 11})) for r, w in pairs
    ]
    (target,) = [t for t in evaluate(latency_pairs(worse), []) if t.name.startswith("latency")]
    assert target.ok is False  # p50 16 ms above


def test_fifo_and_blocking_are_judged_against_the_raw_loop_on_the_same_workload() -> None:
    # The raw loop on the FIFO queue reaches 0.8x of its no-op; the worker 0.76x: 0.95x of
    # the raw loop on the same workload (met), though 0.76x of the no-op. Blocking: 0.6x of
    # the raw loop's blocking run (missed). Without a same-workload raw loop: the no-op.
    runs = [
        _run("raw", 0, 1000, 0.5, 0.3),
        _run("raw-fifo", 0, 800, 0.5, 0.3),
        _run("fifo", 0, 760, 0.5, 0.3),
        _run("raw-block", 0, 700, 0.5, 0.3),
        _run("block", 0, 420, 0.5, 0.3),
    ]
    targets = {t.profile: t for t in evaluate(aggregate(runs, TUNED), []) if t.profile in ("fifo", "block")}
    assert targets["fifo"].ok is True
    assert "0.95x without (raw loop on a FIFO queue" in targets["fifo"].result
    assert "/ 0.76x of the raw loop's no-op" in targets["fifo"].result
    assert "itself reaches 0.86x / 0.80x;" in targets["fifo"].result  # the raw FIFO loop's own
    assert targets["block"].ok is False
    assert "0.60x without (raw loop on 20 ms blocking" in targets["block"].result
    alone = {t.profile: t for t in evaluate(aggregate(runs[:1] + runs[2:3], TUNED), [])}
    assert alone["fifo"].ok is False  # 0.76x of the no-op: no raw FIFO loop to judge against
    assert "(raw loop, no-op)" in alone["fifo"].result


def test_heartbeat_capacity_target() -> None:
    ok = Capacity(
        latency=0.3,
        in_flight=100,
        visibility=6,
        heartbeat_calls=5,
        hold=24,
        model_capacity=333,
        declared_capacity=100,
        held=100,
        extend_calls=120,
    )
    lapsed = Capacity(
        latency=1.0,
        in_flight=100,
        visibility=6,
        heartbeat_calls=5,
        hold=24,
        model_capacity=100,
        declared_capacity=100,
        held=100,
        extend_calls=120,
        duplicates=2,
    )
    assert ok.ok
    assert not lapsed.ok
    (target,) = evaluate([], [ok, lapsed])
    assert target.ok is False
    assert "100 leases at 300 ms/call: 0 lapses" in target.result


async def test_empty_receives_answer_open_long_polls_at_once(aws: Aws) -> None:
    queue = await aws.queue()
    proxy = await asyncio.to_thread(Proxy, aws.endpoint)
    try:
        async with get_session().create_client("sqs", endpoint_url=proxy.url, region_name="us-east-1") as sqs:
            poll = asyncio.create_task(sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=20))
            await asyncio.sleep(0.5)
            assert not poll.done()
            started = time.monotonic()
            await asyncio.to_thread(proxy.faults, empty_receives=True)
            assert (await poll).get("Messages") is None
            assert time.monotonic() - started < 2
            # New receives too, until the faults are cleared.
            assert (await sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=20)).get("Messages") is None
            await asyncio.to_thread(proxy.faults)
            # (Another queue: the server still holds the abandoned poll of the first one, which
            # would take a message sent there: empty_receives is for a drained queue.)
            other = await aws.queue()
            await aws.send(other.url, {"n": 1})
            got = await sqs.receive_message(QueueUrl=other.url, WaitTimeSeconds=5)
            assert len(got["Messages"]) == 1
            counts = await asyncio.to_thread(proxy.counts)
    finally:
        await asyncio.to_thread(proxy.stop)
    assert counts["outcomes"]["emptied"] == 2


def test_the_reliability_page_keeps_its_hand_written_sections() -> None:
    from benchmarks.reliability_doc import KEEP, kept

    generated = "# Reliability\n\n## Last run\n\ntable\n\n"
    hand = "## Duplicates and dead letters, explained (this run)\n\nwhy\n\n## Mutation testing\n\nscores\n"
    assert kept(generated + hand) == f"{KEEP}\n\n{hand}"  # a page from before the marker
    marked = f"{generated}{KEEP}\n\n{hand}"
    assert kept(marked) == f"{KEEP}\n\n{hand}"
    assert kept(generated) == ""


def test_the_benchmarks_server_freezes_its_heap_and_logs_long_collections(tmp_path: Path) -> None:
    site = str(ROOT / "benchmarks" / "server_site")
    frozen = subprocess.run(
        [sys.executable, "-c", "import gc, time; time.sleep(0.5); print(gc.get_freeze_count())"],
        env={**os.environ, "PYTHONPATH": site, "BENCH_SERVER_GC_FREEZE": "0.05"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(frozen.stdout) > 0
    log = tmp_path / "gc.log"
    big_heap = "import gc; keep = [[i] for i in range(2_000_000)]; gc.collect()"
    subprocess.run(
        [sys.executable, "-c", big_heap],
        env={
            **os.environ,
            "PYTHONPATH": site,
            "BENCH_SERVER_GC_LOG": str(log),
            "BENCH_SERVER_GC_LOG_MS": "5",
        },
        check=True,
    )
    # Young collections while the list grows may pass 5 ms on a loaded machine and be logged
    # first; the explicit full collection at the end must be among the lines.
    lines = [line.split() for line in log.read_text().splitlines()]
    full = [int(millis) for _, generation, millis in lines if generation == "2"]
    assert full, lines
    assert all(int(millis) >= 5 for _, _, millis in lines)
    millis = str(max(int(m) for _, _, m in lines))
    from benchmarks.report import server_gc
    from benchmarks.run import server_pauses

    gc = server_pauses(log)
    assert gc is not None
    assert gc["pauses"] >= 1
    assert gc["longest_ms"] >= int(millis)
    assert "longest" in server_gc({"server_gc": gc})
    assert server_pauses(tmp_path / "none.log") == {"frozen_every_s": 1.0, "pauses": 0, "longest_ms": 0}
    assert "left as it was" in server_gc({"server_gc": None})
    assert "not recorded" in server_gc({})


def test_the_benchmarks_server_runs_without_localstacks_per_call_sqs_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.servers
    from benchmarks.report import server_metrics
    from benchmarks.run import sqs_server

    started: list[dict[str, str]] = []

    class Server:
        endpoint = "http://127.0.0.1:1"
        proc = None

        def __init__(self, env: dict[str, str]) -> None:
            started.append(env)

        def start(self) -> None: ...

        def cleanup(self) -> None: ...

    monkeypatch.setattr(tests.servers, "LocalStack", Server)
    with sqs_server(None, freeze=True, sqs_metrics=False):
        pass
    with sqs_server(None):
        pass
    assert started[0]["SQS_DISABLE_CLOUDWATCH_METRICS"] == "1"
    # compare and chaos keep LocalStack's default (on), set explicitly so that a value
    # inherited from the caller's environment cannot disagree with the report
    assert started[1]["SQS_DISABLE_CLOUDWATCH_METRICS"] == "0"
    assert "were off" in server_metrics({"server_sqs_metrics": False})
    assert "not recorded" in server_metrics({})
    assert server_metrics({"server_sqs_metrics": None}) == ""  # a server given by --endpoint
