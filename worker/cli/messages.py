"""``worker send`` and ``worker publish``: one message from ``--body``, or many from a
JSON-lines ``--file`` (``-`` for stdin), sent in batches of ten. With ``--s3-bucket`` (or
``WORKER_PAYLOADS__BUCKET``) bodies over the threshold are stored in S3 and sent as pointers
in the Amazon SQS/SNS Extended Client format. ``--group-id`` (one value) or ``--group-from
FIELD`` (each body's field) set the MessageGroupId: a FIFO destination's ordered group, or
a standard one's tenant for SQS fair queues."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from worker.cli.options import DEFAULT_TIMEOUT, EndpointOption, RegionOption, TimeoutOption
from worker.errors import EXIT_FAILED, ConfigError
from worker.messages.payloads import DEFAULT_THRESHOLD, SQS_MAX_BYTES

if TYPE_CHECKING:
    from worker.cli.common import Connection
    from worker.producer import BatchResult, Offload, OutgoingMessage, Producer

TypeOption = Annotated[
    str | None, typer.Option("--type", help="Message type: the 'type' attribute the worker dispatches on.")
]
BodyOption = Annotated[
    str | None,
    typer.Option("--body", help="JSON body, or @FILE: a file's content; either is sent exactly as given."),
]
FileOption = Annotated[
    str | None, typer.Option("--file", help="JSON-lines file, one body per line ('-': stdin); batches of 10.")
]
AttrOption = Annotated[
    list[str] | None,
    typer.Option("--attr", metavar="NAME=VALUE", help="A string message attribute (repeatable)."),
]
GroupOption = Annotated[
    str | None,
    typer.Option(
        "--group-id",
        help="Message group id of every message: FIFO, the ordered group (required); standard, "
        "the tenant, for fair queues.",
    ),
]
GroupFromOption = Annotated[
    str | None,
    typer.Option(
        "--group-from",
        metavar="FIELD",
        help="Take each message's group id from this field of its JSON body (e.g. a tenant key).",
    ),
]
DedupOption = Annotated[str | None, typer.Option("--dedup-id", help="Deduplication id (FIFO, one message).")]
RawOption = Annotated[
    bool, typer.Option("--raw", help="Send bodies as text, without checking they are JSON.")
]
_S3 = "Large payloads (S3)"
BucketOption = Annotated[
    str | None,
    typer.Option(
        "--s3-bucket",
        envvar="WORKER_PAYLOADS__BUCKET",
        show_envvar=True,
        help="Offload large bodies to this bucket (extended-client format; the worker reads them).",
        rich_help_panel=_S3,
    ),
]
PrefixOption = Annotated[
    str,
    typer.Option(
        "--s3-prefix",
        envvar="WORKER_PAYLOADS__PREFIX",
        show_envvar=True,
        help="Key prefix of offloaded bodies (key: prefix + UUID).",
        rich_help_panel=_S3,
    ),
]
OffloadOption = Annotated[
    str,
    typer.Option(
        "--offload",
        envvar="WORKER_PAYLOADS__OFFLOAD",
        show_envvar=True,
        metavar="auto|always",
        help="auto: bodies over --offload-threshold go to S3; always: every body does.",
        rich_help_panel=_S3,
    ),
]
ThresholdOption = Annotated[
    int,
    typer.Option(
        "--offload-threshold",
        envvar="WORKER_PAYLOADS__THRESHOLD",
        show_envvar=True,
        min=0,
        max=SQS_MAX_BYTES,
        help="Bytes (body plus attributes) above which 'auto' offloads (SNS: 256 KiB at most).",
        rich_help_panel=_S3,
    ),
]


def offload_of(bucket: str | None, prefix: str, offload: str, threshold: int) -> Offload | None:
    """The producer's offloading from the command line (None: no bucket, no offloading)."""
    from worker.producer import Offload

    mode = offload.strip().lower()
    if mode not in ("auto", "always"):
        raise ConfigError(f"--offload {offload!r}: expected auto or always")
    if not bucket:
        if mode == "always":
            raise ConfigError("--offload always needs --s3-bucket (or WORKER_PAYLOADS__BUCKET)")
        return None
    return Offload(bucket, prefix, threshold, always=mode == "always")


def _parse_attrs(pairs: list[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--attr {pair!r}: expected NAME=VALUE")
        attrs[key] = value
    return attrs


def _body(text: str, raw: bool, where: str) -> Any:
    """``text`` parsed as JSON (checked, for what the command reads of it: its type, a group
    field); with ``raw``, ``text`` itself."""
    if raw:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: body is not valid JSON ({exc}); pass --raw to send text as is") from None


def read_bodies(body: str | None, file: str | None, raw: bool) -> list[Any]:
    """Each body, parsed (or, with ``raw``, as text)."""
    return [parsed for _, _, parsed in _read(body, file, raw)]


def _read_file(body: str) -> str:
    """The text of ``--body @FILE``: its bytes exactly (no newline translation), as UTF-8."""
    path = body[1:]
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--body {body}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--body {body}: not UTF-8 text (byte {exc.start}); SQS bodies are text") from None


def _read(body: str | None, file: str | None, raw: bool) -> list[tuple[str, str, Any]]:
    """Each body with where it came from (``--body``, or ``FILE:LINE``): its text, sent as it
    is (never re-serialised: the bytes of ``@FILE``, the line of ``--file``), and the text
    parsed as JSON (checked; the text itself with ``raw``)."""
    if body is not None and file is not None:
        raise ConfigError("give --body or --file, not both")
    if file is None:
        if body is None:
            raise ConfigError(
                "nothing to send: give --body JSON (or @FILE) or --file FILE.jsonl (- for stdin)"
            )
        text = _read_file(body) if body.startswith("@") else body
        return [("--body", text, _body(text, raw, "--body"))]
    try:
        stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"--file {file}: {exc.strerror}") from None
    with stream:
        lines = [(n, line.rstrip("\n")) for n, line in enumerate(stream, 1) if line.strip()]
    return [(f"{file}:{n}", line, _body(line, raw, f"{file}:{n}")) for n, line in lines]


def _typeless(bodies: list[Any], message_type: str | None) -> bool:
    return message_type is None and any(not (isinstance(b, dict) and b.get("type")) for b in bodies)


def _report(result: BatchResult, count: int, verb: str) -> None:
    for f in result.failed:
        sys.stderr.write(f"failed: message {f.index}: {f.code}: {f.message}\n")
    if count == 1 and not result.failed:
        typer.echo(f"{verb} {result.sent[0]}")
    else:
        typer.echo(f"{verb} {len(result.sent)}, failed {len(result.failed)}")
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


@contextlib.asynccontextmanager
async def _producer(conn: Connection, offload: Offload | None) -> AsyncIterator[Producer]:
    """A producer; with tracing asked for by the OTEL_* variables, its sends are spans
    whose context goes into the messages (exported before the command ends). The S3 store
    (and aioboto3) only with offloading."""
    from worker.observe import tracing_switch
    from worker.producer import Producer

    traced = False
    if tracing_switch.requested():
        from worker.observe.tracing import configure

        traced = configure("sqs-worker-cli") is not None
    try:
        async with contextlib.AsyncExitStack() as stack:
            sqs = await stack.enter_async_context(conn.client("sqs"))
            sns = await stack.enter_async_context(conn.client("sns"))
            payloads = None
            if offload is not None:
                from worker.messages.payload_store import PayloadStore

                payloads = await stack.enter_async_context(
                    PayloadStore.connect(conn.settings(), retry_for=conn.timeout)
                )
            yield Producer(sqs, sns, offload=offload, payloads=payloads)
    finally:
        if traced:
            import asyncio

            from worker.observe.tracing import shutdown

            await asyncio.to_thread(shutdown)


async def _deliver(
    label: str,
    deliver: Callable[[list[OutgoingMessage], Callable[[int, int], None] | None], Awaitable[BatchResult]],
    messages: list[OutgoingMessage],
) -> BatchResult:
    """One message quietly; many with a progress bar."""
    if len(messages) == 1:
        return await deliver(messages, None)
    from worker.cli.output import progress

    with progress(label, len(messages)) as update:
        return await deliver(messages, update)


async def _send(
    conn: Connection, queue: str, messages: list[OutgoingMessage], offload: Offload | None
) -> BatchResult:
    async with _producer(conn, offload) as producer:
        return await _deliver("sending", functools.partial(producer.send_many, queue), messages)


async def _publish(
    conn: Connection, topic: str, messages: list[OutgoingMessage], typeless: bool, offload: Offload | None
) -> BatchResult:
    from worker.cli.output import warn
    from worker.ops.filters import untyped_goes_nowhere

    async with _producer(conn, offload) as producer:
        arn = await producer.topic_arn(topic)
        if typeless and await untyped_goes_nowhere(producer.sns, arn, "type"):
            warn(
                f"topic {topic!r}: every subscription filters on the 'type' attribute, so a message "
                "without --type reaches no queue"
            )
        return await _deliver("publishing", functools.partial(producer.publish_many, arn), messages)


def send(
    queue: Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name or URL.")],
    type_: TypeOption = None,
    body: BodyOption = None,
    file: FileOption = None,
    attr: AttrOption = None,
    group_id: GroupOption = None,
    group_from: GroupFromOption = None,
    dedup_id: DedupOption = None,
    raw: RawOption = False,
    delay: Annotated[int | None, typer.Option(min=0, max=900, help="Delivery delay in seconds.")] = None,
    s3_bucket: BucketOption = None,
    s3_prefix: PrefixOption = "",
    offload: OffloadOption = "auto",
    offload_threshold: ThresholdOption = DEFAULT_THRESHOLD,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Send one message, or many from a JSON-lines file, to a queue (up to 1 MiB each;
    larger with --s3-bucket)."""
    offloading = offload_of(s3_bucket, s3_prefix, offload, offload_threshold)
    messages, parsed = _outgoing(type_, body, file, attr, (group_id, group_from), dedup_id, raw, delay=delay)
    if _typeless(parsed, type_):
        from worker.cli.output import info

        info(
            'note: no --type and no "type" in the body: the worker dispatches on the message type and '
            "rejects a message without one (unless the queue's worker is configured otherwise)"
        )
    from worker.cli.common import Connection, run_async

    conn = Connection(region, endpoint_url, timeout)
    result = run_async(lambda: _send(conn, queue, messages, offloading), conn, queue=queue)
    _report(result, len(messages), "sent")


def publish(
    topic: Annotated[str, typer.Argument(metavar="TOPIC", help="Topic name or ARN.")],
    type_: TypeOption = None,
    body: BodyOption = None,
    file: FileOption = None,
    attr: AttrOption = None,
    group_id: GroupOption = None,
    group_from: GroupFromOption = None,
    dedup_id: DedupOption = None,
    raw: RawOption = False,
    subject: Annotated[str | None, typer.Option(help="SNS subject.")] = None,
    structure_json: Annotated[
        bool, typer.Option("--structure-json", help='The body is {"default": ..., "<protocol>": ...}.')
    ] = False,
    s3_bucket: BucketOption = None,
    s3_prefix: PrefixOption = "",
    offload: OffloadOption = "auto",
    offload_threshold: ThresholdOption = DEFAULT_THRESHOLD,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Publish one message, or many from a JSON-lines file, to a topic (up to 256 KiB each;
    larger with --s3-bucket)."""
    offloading = offload_of(s3_bucket, s3_prefix, offload, offload_threshold)
    messages, _ = _outgoing(
        type_,
        body,
        file,
        attr,
        (group_id, group_from),
        dedup_id,
        raw,
        subject=subject,
        structure_json=structure_json,
    )
    typeless = type_ is None
    from worker.cli.common import Connection, run_async

    conn = Connection(region, endpoint_url, timeout)
    result = run_async(lambda: _publish(conn, topic, messages, typeless, offloading), conn, service="sns")
    _report(result, len(messages), "published")


def _outgoing(
    message_type: str | None,
    body: str | None,
    file: str | None,
    attr: list[str] | None,
    group: tuple[str | None, str | None],
    dedup_id: str | None,
    raw: bool,
    **extra: Any,
) -> tuple[list[OutgoingMessage], list[Any]]:
    """The messages to send, each body the text given (sent as it is), and those bodies
    parsed; ``group``: (``--group-id``, ``--group-from``)."""
    from worker.producer import OutgoingMessage, group_of

    group_id, group_from = group
    if dedup_id and file is not None:
        raise ConfigError("--dedup-id applies to one message; with --file each message gets its own")
    if group_id is not None and group_from is not None:
        raise ConfigError("give --group-id (one group for every message) or --group-from FIELD, not both")
    if group_from is not None and raw:
        raise ConfigError(f"--group-from {group_from}: takes the group id from a JSON body; not with --raw")
    common: dict[str, Any] = {
        "message_type": message_type,
        "attributes": _parse_attrs(attr or []),
        "group_id": group_id,
        "dedup_id": dedup_id,
        **{k: v for k, v in extra.items() if v not in (None, False)},
    }
    messages, parsed = [], []
    for i, (where, text, b) in enumerate(_read(body, file, raw)):
        if group_from is not None:
            try:
                common["group_id"] = group_of(b, group_from)
            except ValueError as exc:
                raise ConfigError(f"--group-from {group_from}: message {i} ({where}): {exc}") from None
        messages.append(OutgoingMessage(text, **common))
        parsed.append(b)
    return messages, parsed
