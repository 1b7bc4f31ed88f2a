"""``worker run`` and ``worker check``: load and validate the configuration, import the
handler modules, then consume until SIGTERM/SIGINT. Signals are handled here, at the edge,
and nowhere else."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from worker.cli.options import DEFAULT_CONFIG, ConfigOption
from worker.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, WorkerError

if TYPE_CHECKING:
    from worker.runtime.supervisor import Supervisor
    from worker.settings import WorkerSettings

AppDirOption = Annotated[
    str,
    typer.Option(
        "--app-dir",
        envvar="WORKER_APP_DIR",
        show_envvar=True,
        help="Directory your handler modules are imported from.",
    ),
]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


async def serve(settings: WorkerSettings, handle_signals: bool = True) -> int:
    """Run the worker until SIGTERM/SIGINT; a second signal exits at once."""
    import asyncio

    from worker.cli.common import explain, report
    from worker.observe.logs import flush_logs, get_logger
    from worker.observe.metrics import NullMetrics
    from worker.runtime.supervisor import Supervisor, load_registries

    log = get_logger()
    registries = load_registries(settings)
    # Without the health server nobody can scrape the metrics: record none (and leave
    # prometheus_client unimported).
    supervisor = Supervisor(settings, registries, None if settings.health.enabled else NullMetrics())
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        # Act first, log after: a log write can fail (a closed pipe) and must not keep the
        # signal from working.
        received.append(sig)
        first = len(received) == 1
        if first:
            supervisor.request_stop()
        try:
            if first:
                log.info("signal_received", signal=sig.name, action="graceful_shutdown", **_waits(supervisor))
            else:
                log.warning("shutdown_forced", signal=sig.name)
        except Exception:
            pass
        if not first:
            flush_logs()
            os._exit(EXIT_INTERRUPTED if sig == signal.SIGINT else EXIT_FAILED)

    wired: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
            wired.append(sig)
    frozen = asyncio.create_task(_freeze_after_start(supervisor), name="gc-freeze")
    try:
        await supervisor.run()
    except Exception as exc:
        explained = explain(exc, None)
        if explained is None:
            raise
        return report(explained)
    finally:
        frozen.cancel()
        for sig in wired:
            loop.remove_signal_handler(sig)
    # Ctrl-C's stop, however clean, ends as an interrupted command does (130); SIGTERM's
    # clean stop is a success.
    return EXIT_INTERRUPTED if received[:1] == [signal.SIGINT] else EXIT_OK


def _waits(supervisor: Supervisor) -> dict[str, object]:
    """What a stop waits for, and for how long at most, for the ``signal_received`` line."""
    settings = supervisor.settings
    running = sum(c.in_flight for c in supervisor.consumers)
    polls = max((q.wait_time_seconds for q in settings.queues.values()), default=0)
    limit = settings.shutdown_grace + settings.shutdown_flush
    waiting = f"{running} running message{'s' if running != 1 else ''}" if running else "no running messages"
    return {
        "waiting_for": f"{waiting} and the open long polls (up to {polls} s); then deletes are flushed",
        "at_most_seconds": limit,
        "hint": "a second Ctrl-C (or signal) stops at once; running messages then come back after their visibility timeout",
    }


async def _freeze_after_start(supervisor: Supervisor) -> None:
    """Once every consumer runs, what start-up built (modules, botocore's service models,
    settings, handler registries: about 90,000 objects) moves to the garbage collector's
    permanent generation (``gc.freeze``) and the collector is switched back on (the console
    script starts ``worker run`` with it off: ``worker.cli.entry``). What was frozen lives as
    long as the process, and a full collection no longer walks it (about 40 ms each, once
    every few thousand messages: measured, about 3% of a no-op message's CPU); what is
    created later is collected as usual. Start-up's own cyclic garbage is frozen with it
    instead of being collected: measured, 1,330 objects (a collection to find them would cost
    a full pass, 40-60 ms, over everything else)."""
    await supervisor.started.wait()
    gc.freeze()
    gc.enable()


def import_path(app_dir: str) -> None:
    """Handler modules are imported from ``--app-dir`` (default: the current directory), as
    uvicorn's --app-dir and dramatiq's --path do; the console script alone would not."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)


def run(
    config: ConfigOption = DEFAULT_CONFIG,
    app_dir: AppDirOption = ".",
    log_level: Annotated[
        LogLevel | None, typer.Option(case_sensitive=False, help="Overrides log.level.")
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option(case_sensitive=False, help="Overrides log.format.")
    ] = None,
) -> None:
    """Consume the configured queues until SIGTERM or SIGINT (a second signal exits at once)."""
    from worker.observe.logs import configure_logging, flush_logs, get_logger
    from worker.runtime.steps.invoke import handler_threads_running
    from worker.runtime.supervisor import check_idempotency, load_registries
    from worker.settings import load_settings

    import_path(app_dir)
    settings = load_settings(config)
    configure_logging(log_level or settings.log.level, log_format or settings.log.format)
    check_idempotency(settings, load_registries(settings))  # bad handler modules: before any AWS call
    code = run_loop(serve(settings))
    left = threads_left_behind()
    if left:
        # A thread is still running past the final deadline: a plain-function handler (its
        # message was never released and reappears after its visibility timeout) or an
        # async handler's ``asyncio.to_thread`` call. Python would wait for them at exit;
        # the process must end by shutdown_grace + shutdown_flush, so it does not.
        get_logger().warning("threads_left_behind", threads=left, handler_threads=handler_threads_running())
        flush_logs()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, without its last step: joining the default thread pool would
    wait for every ``asyncio.to_thread`` call still running, for as long as they take."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(pool)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            loop.close()


def threads_left_behind(wait: float = 0.2) -> list[str]:
    """The names of the threads still running (idle pool threads end within ``wait``)."""
    deadline = time.monotonic() + wait
    left = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread.name)
    return left


def check(config: ConfigOption = DEFAULT_CONFIG, app_dir: AppDirOption = ".") -> None:
    """Validate the configuration and import the handler modules, without calling AWS; list,
    per queue, where its messages' types come from and which handler serves what."""
    from worker.runtime.supervisor import check_idempotency, describe_routing, load_registries
    from worker.settings import load_settings

    import_path(app_dir)
    settings = load_settings(config)
    registries = load_registries(settings)
    check_idempotency(settings, registries)
    for key, registry in registries.items():
        q = settings.queues[key]
        where = f" ({q.region})" if q.region else ""
        typer.echo(f"{key}: {q.queue_name(key)}{where} <- {', '.join(registry.types)}")
        for line in describe_routing(q, registry, settings.message_type_attribute):
            typer.echo(line)
    typer.echo("configuration OK")


__all__ = ["WorkerError", "check", "import_path", "run", "serve"]
