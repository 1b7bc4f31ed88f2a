"""``worker send`` / ``worker publish`` against LocalStack: group ids on standard
destinations (SQS fair queues), one for every message (``--group-id``) or each from a field
of its JSON body (``--group-from``), and their errors on one line naming the option and the
message. Commands run in-process (``tests.cli.test_errors.ainvoke``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.cli.test_errors import ainvoke
from tests.conftest import Aws
from tests.test_producer import group_ids
from worker.errors import EXIT_USAGE


def at(aws: Aws) -> list[str]:
    return ["--endpoint-url", aws.endpoint, "--region", "us-east-1"]


async def test_send_and_publish_set_group_ids_on_standard_destinations(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = await aws.queue()
    run = await ainvoke(
        capsys, "send", queue.name, "--type", "job", "--body", '{"n": 0}', "--group-id", "acme", *at(aws)
    )
    assert run.code == 0, run.err
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"tenant": "globex", "n": 1}\n\n{"tenant": 7, "n": 2}\n')
    run = await ainvoke(
        capsys, "send", queue.name, "--type", "job", "--file", str(lines), "--group-from", "tenant", *at(aws)
    )
    assert run.code == 0, run.err
    assert await group_ids(aws, queue.url, 3) == {
        '{"n": 0}': "acme",
        '{"tenant": "globex", "n": 1}': "globex",
        '{"tenant": 7, "n": 2}': "7",
    }
    topic = (await aws.sns.create_topic(Name=f"fair-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    await aws.sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": "true"}
    )
    run = await ainvoke(
        capsys, "publish", topic, "--type", "job", "--file", str(lines), "--group-from", "tenant", *at(aws)
    )
    assert run.code == 0, run.err
    run = await ainvoke(
        capsys, "publish", topic, "--type", "job", "--body", '{"n": 3}', "--group-id", "initech", *at(aws)
    )
    assert run.code == 0, run.err
    assert await group_ids(aws, queue.url, 3) == {
        '{"tenant": "globex", "n": 1}': "globex",
        '{"tenant": 7, "n": 2}': "7",
        '{"n": 3}': "initech",
    }


async def test_group_and_deduplication_errors_are_one_line_naming_the_option_and_message(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = await aws.queue()
    topic = (await aws.sns.create_topic(Name=f"fair-{uuid.uuid4().hex[:8]}"))["TopicArn"]
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("".join(json.dumps(b) + "\n" for b in ({"tenant": "a"}, {"tenant": "b"}, {"n": 3})))
    cases = [
        (
            ["send", queue.name, "--file", str(lines), "--group-from", "tenant"],
            f"--group-from tenant: message 2 ({lines}:3): the body has no 'tenant' field",
        ),
        (
            ["publish", topic, "--body", '{"tenant": null}', "--group-from", "tenant"],
            "--group-from tenant: message 0 (--body): its 'tenant' is null",
        ),
        (
            ["send", queue.name, "--body", "[1]", "--group-from", "tenant"],
            "--group-from tenant: message 0 (--body): the body is not a JSON object",
        ),
        (["send", queue.name, "--body", "{}", "--group-id", "a", "--group-from", "t"], "not both"),
        (["send", queue.name, "--body", "x", "--raw", "--group-from", "t"], "not with --raw"),
        (
            ["send", queue.name, "--body", "{}", "--dedup-id", "d"],
            f"message 0: a deduplication id (dedup_id, --dedup-id) is for FIFO queues and topics only; "
            f"queue '{queue.name}' is standard",
        ),
        (["publish", topic, "--body", "{}", "--dedup-id", "d"], "is for FIFO queues and topics only; topic"),
    ]
    for args, expected in cases:
        run = await ainvoke(capsys, *args, "--type", "job", *at(aws))
        assert run.code == EXIT_USAGE, (args, run.err)
        assert expected in run.one_line_error(), (args, run.err)
    assert await aws.total(queue.url) == 0  # nothing was sent for any of them


async def test_send_body_from_a_file_sends_its_bytes_exactly(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: ``--body @FILE`` parsed the JSON and sent ``json.dumps`` of it: keys re-spaced,
    non-ASCII escaped, numbers rewritten, the file's newlines gone."""
    queue = await aws.queue()
    text = '{\r\n  "b":1.50,  "a" : "café ☕",\r\n  "n": 1e3\r\n}\n'
    body = tmp_path / "order.json"
    body.write_bytes(text.encode("utf-8"))
    run = await ainvoke(capsys, "send", queue.name, "--type", "job", "--body", f"@{body}", *at(aws))
    assert run.code == 0, run.err
    lines = tmp_path / "orders.jsonl"
    lines.write_text('{"z": 1,   "é": "x"}\n{"n":2.0}\n', encoding="utf-8")
    run = await ainvoke(capsys, "send", queue.name, "--type", "job", "--file", str(lines), *at(aws))
    assert run.code == 0, run.err
    got = sorted(m["Body"] for m in await aws.drain(queue.url))
    assert got == sorted([text, '{"z": 1,   "é": "x"}', '{"n":2.0}'])
    # Still checked: a file that is not JSON is refused, unless --raw.
    body.write_text("{not json")
    run = await ainvoke(capsys, "send", queue.name, "--body", f"@{body}", *at(aws))
    assert run.code == EXIT_USAGE
    assert "--body: body is not valid JSON" in run.one_line_error()
    body.write_bytes(b"\xff\xfe")
    run = await ainvoke(capsys, "send", queue.name, "--body", f"@{body}", "--raw", *at(aws))
    assert run.code == EXIT_USAGE
    assert "not UTF-8 text" in run.one_line_error()
