"""The ``worker`` command: parse, load settings, set up logs, wire signals, run.

Exit codes: 0 clean stop; 1 runtime or AWS error at start (queue missing, access denied,
server unreachable); 2 invalid configuration or handler modules.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, NoRegionError

from worker.aws import AwsError
from worker.messages.routing import HandlerError
from worker.observe.logs import configure_logging, get_logger
from worker.runtime.processor import handler_threads_running
from worker.runtime.supervisor import StartupError, Supervisor, load_registries
from worker.settings import ConfigError, WorkerSettings, load_settings

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
DEFAULT_CONFIG = os.environ.get("WORKER_CONFIG", "config/worker.yaml")


def _fail(message: str, code: int) -> int:
    print(f"worker: error: {message}", file=sys.stderr)
    return code


async def serve(settings: WorkerSettings, handle_signals: bool = True) -> int:
    """Run the worker until SIGTERM/SIGINT; a second signal exits at once."""
    log = get_logger()
    registries = load_registries(settings)
    supervisor = Supervisor(settings, registries)
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
                log.info("signal_received", signal=sig.name, action="graceful_shutdown")
            else:
                log.warning("shutdown_forced", signal=sig.name)
        except Exception:
            pass
        if not first:
            os._exit(EXIT_ERROR)

    wired: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
            wired.append(sig)
    try:
        await supervisor.run()
    except (AwsError, StartupError) as exc:
        return _fail(str(exc), EXIT_ERROR)
    except NoRegionError:
        return _fail("no AWS region: set aws.region, AWS_REGION or AWS_DEFAULT_REGION", EXIT_CONFIG)
    except BotoCoreError as exc:
        return _fail(f"AWS: {exc}", EXIT_ERROR)
    finally:
        for sig in wired:
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _import_path(args: argparse.Namespace) -> None:
    """Handler modules are imported from ``--app-dir`` (default: the current directory), as
    uvicorn's --app-dir and dramatiq's --path do; the console script alone would not."""
    app_dir = os.path.abspath(args.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)


def _load(args: argparse.Namespace) -> WorkerSettings:
    _import_path(args)
    settings = load_settings(args.config)
    log_cfg = settings.log
    configure_logging(args.log_level or log_cfg.level, args.log_format or log_cfg.format)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = _load(args)
        load_registries(settings)  # fail on bad handler modules before any AWS call
    except (ConfigError, HandlerError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    code = asyncio.run(serve(settings))
    if handler_threads_running():
        # A plain-function handler is still running past the final deadline; its message
        # was never released and reappears after its visibility timeout. Do not wait.
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    _import_path(args)
    try:
        settings = load_settings(args.config)
        registries = load_registries(settings)
    except (ConfigError, HandlerError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    for key, registry in registries.items():
        print(f"{key}: {settings.queues[key].queue_name(key)} <- {', '.join(registry.types)}")
    print("configuration OK")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.cli.demo import run_demo

    return run_demo(endpoint_url=args.endpoint_url, log_level=args.log_level or "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker",
        description="An asyncio worker service for AWS SQS and SNS.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            default=DEFAULT_CONFIG,
            help="worker YAML file (default: $WORKER_CONFIG or config/worker.yaml)",
        )
        p.add_argument(
            "--app-dir",
            default=os.environ.get("WORKER_APP_DIR", "."),
            help="directory your handler modules are imported from (default: $WORKER_APP_DIR or .)",
        )

    run = sub.add_parser("run", help="consume the configured queues until SIGTERM/SIGINT")
    with_config(run)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["auto", "json", "console"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate the configuration and import the handlers")
    with_config(check)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser(
        "demo",
        help="end-to-end demo on an embedded SQS/SNS server: provision, publish, consume, report",
    )
    demo.add_argument("--endpoint-url", help="use this SQS/SNS endpoint instead of the embedded server")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=cmd_demo)

    from worker.cli.admin import add_commands, run_command

    add_commands(sub)
    for name in ("provision", "send", "publish", "dlq", "stats", "iam-policy"):
        sub.choices[name].set_defaults(func=run_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
