"""The operator's CLI against LocalStack: send, dlq show / redrive, stats, iam-policy."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cli.test_cli import run_worker
from tests.cli.test_errors import ainvoke
from tests.conftest import Aws, eventually, running, settings_for
from tests.ops.test_provision import fan_out_topology, provision
from worker import Message, Router
from worker.ops.topology import Topology
from worker.runtime.supervisor import Supervisor
from worker.settings import load_settings


def cli(aws: Aws, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = run_worker([*args, "--endpoint-url", aws.endpoint, "--region", "us-east-1"], timeout=120)
    return result.returncode, result.stdout, result.stderr


async def test_send_of_1000_json_lines_arrives_complete(aws: Aws, tmp_path: Path) -> None:
    queue = await aws.queue()
    lines = tmp_path / "orders.jsonl"
    lines.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(1000)))
    code, out, err = await asyncio.to_thread(
        cli, aws, "send", queue.name, "--type", "job", "--file", str(lines)
    )
    assert code == 0, err
    assert "sent 1000, failed 0" in out
    assert "1000/1000" in err  # progress
    assert (await aws.counts(queue.url))["visible"] == 1000
    got = sorted(json.loads(m["Body"])["n"] for m in await aws.drain(queue.url))
    assert got == list(range(1000))


async def test_bad_send_input_is_one_line_and_nonzero(aws: Aws, tmp_path: Path) -> None:
    queue = await aws.queue()
    code, _, err = await asyncio.to_thread(cli, aws, "send", queue.name, "--body", "{not json")
    assert code == 2
    assert "body is not valid JSON" in err
    assert len(err.strip().splitlines()) == 1
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * 1_100_000}))
    code, _, err = await asyncio.to_thread(cli, aws, "send", queue.name, "--body", f"@{big}")
    assert code == 2
    assert "over the SQS limit of 1 MiB" in err
    assert "--s3-bucket" in err
    code, _, err = await asyncio.to_thread(cli, aws, "send", "no-such-queue-x", "--body", "{}")
    assert code != 0
    assert "queue 'no-such-queue-x' does not exist" in err
    assert await aws.total(queue.url) == 0


async def test_send_and_publish_offload_large_bodies_to_s3(aws: Aws, tmp_path: Path) -> None:
    from worker.messages.envelope import parse_message
    from worker.messages.payload_store import PayloadStore
    from worker.settings import AwsSettings

    queue = await aws.queue()
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    big = tmp_path / "big.json"
    body = {"blob": "x" * 2_000_000}
    big.write_text(json.dumps(body))
    async with PayloadStore.connect(AwsSettings(endpoint_url=aws.endpoint, region="us-east-1")) as store:
        await (await store.client()).call("create_bucket", Bucket=bucket)
        code, out, err = await asyncio.to_thread(
            cli, aws, "send", queue.name, "--type", "blob", "--body", f"@{big}", "--s3-bucket", bucket,
            "--s3-prefix", "cli/",
        )  # fmt: skip
        assert code == 0, err
        assert out.startswith("sent ")
        topic = (await aws.sns.create_topic(Name=f"cli-{uuid.uuid4().hex[:8]}"))["TopicArn"]
        await aws.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes={"RawMessageDelivery": "true"}
        )
        result = await asyncio.to_thread(
            run_worker,
            ["publish", topic, "--type", "small", "--body", '{"n": 1}', "--offload", "always",
             "--endpoint-url", aws.endpoint, "--region", "us-east-1"],
            {"WORKER_PAYLOADS__BUCKET": bucket},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        got = {m.type: m for m in (parse_message(r) for r in await aws.drain(queue.url, wait=2))}
        assert set(got) == {"blob", "small"}
        for kind, expected in (("blob", body), ("small", {"n": 1})):
            message = got[kind]
            assert message.payload is not None
            assert message.payload.bucket == bucket
            resolved = await store.resolve(message)
            assert resolved is not None
            assert json.loads(resolved.body) == expected
        assert got["blob"].payload is not None
        assert got["blob"].payload.key.startswith("cli/")
    code, _, err = await asyncio.to_thread(
        cli, aws, "send", queue.name, "--body", "{}", "--offload", "always"
    )
    assert code == 2
    assert "--offload always needs --s3-bucket" in err


async def test_dlq_show_does_not_consume(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=2)
    assert queue.dlq_url
    for i in range(3):
        await aws.send(queue.dlq_url, {"order_id": str(i)}, "order.placed")
    code, out, err = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert sorted(m["excerpt"] for m in shown) == sorted(json.dumps({"order_id": str(i)}) for i in range(3))
    assert {m["type"] for m in shown} == {"order.placed"}
    assert {m["reason"] for m in shown} == {None}  # SQS's redrive says nothing
    # A message the worker moved itself says why.
    await aws.sqs.send_message(
        QueueUrl=queue.dlq_url,
        MessageBody="{}",
        MessageAttributes={
            "worker.failure_reason": {"DataType": "String", "StringValue": "unknown type 'x'"}
        },
    )
    code, out, err = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name, "--json")
    assert [m["reason"] for m in json.loads(out) if m["reason"]] == ["unknown type 'x'"]
    code, out, _ = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name)
    assert "unknown type 'x'" in out
    await aws.drain(queue.dlq_url, wait=0)
    for i in range(3):
        await aws.send(queue.dlq_url, {"order_id": str(i)}, "order.placed")
    await eventually(lambda: aws.counts(queue.dlq_url), timeout=5)
    assert (await aws.counts(queue.dlq_url))["visible"] == 3  # still there, visible
    code, out, _ = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name)
    assert "3 message(s)" in out
    plain = await aws.queue()
    code, _, err = await asyncio.to_thread(cli, aws, "dlq", "show", plain.name)
    assert code == 3
    assert "has no redrive policy" in err


async def test_redrive_moves_messages_back_and_the_worker_handles_them(aws: Aws) -> None:
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    broken = True
    handled: list[str] = []
    router = Router()

    @router.handler("order.placed")
    async def placed(payload: dict[str, str], message: Message) -> None:
        if broken:
            raise RuntimeError("downstream outage")
        handled.append(payload["order_id"])

    @router.handler("order.shipped")
    async def shipped(payload: dict[str, str]) -> None:
        if broken:
            raise RuntimeError("downstream outage")
        handled.append("shipped-" + payload["order_id"])

    settings = settings_for(aws.endpoint, queue, retry_backoff=[0])
    async with running(settings, router):
        for i in range(4):
            await aws.send(queue.url, {"order_id": str(i)}, "order.placed")
        await aws.send(queue.url, {"order_id": "9"}, "order.shipped")
        await eventually(lambda: aws.counts(queue.dlq_url), timeout=5)

        async def all_dead() -> bool:
            return (await aws.counts(queue.dlq_url))["visible"] == 5  # type: ignore[arg-type]

        await eventually(all_dead, timeout=30)
        broken = False
        # Only one type first (moved by the CLI itself), then the rest (StartMessageMoveTask).
        code, out, err = await asyncio.to_thread(
            cli, aws, "dlq", "redrive", queue.name, "--type", "order.shipped"
        )
        assert code == 0, err
        assert "moved 1 of 5, skipped 4, failed 0; left in DLQ 4 (manual)" in out
        await eventually(lambda: "shipped-9" in handled, timeout=15)
        code, out, err = await asyncio.to_thread(cli, aws, "dlq", "redrive", queue.name)
        assert code == 0, err
        assert "moved 4 of 4" in out
        assert "StartMessageMoveTask" in out
        await eventually(lambda: len(handled) == 5, timeout=20)
    assert sorted(handled) == ["0", "1", "2", "3", "shipped-9"]
    assert await aws.total(queue.dlq_url) == 0


async def test_stats_and_iam_policy_name_exactly_the_configured_resources(aws: Aws, tmp_path: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    data = fan_out_topology(prefix)
    await provision(aws, Topology(**data))
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    a_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-a"))["QueueUrl"]
    await aws.send(a_url, {"x": 1}, "t")
    await aws.send(a_url, {"x": 2}, "t")
    code, out, err = await asyncio.to_thread(cli, aws, "stats", "-t", str(path), "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {
        f"{prefix}-a",
        f"{prefix}-b",
        f"{prefix}-c",
        f"{prefix}-l.fifo",
    }  # DLQs in their rows
    assert rows[f"{prefix}-a"]["visible"] == 2
    assert rows[f"{prefix}-a"]["dlq"] == f"{prefix}-a-dlq"
    assert rows[f"{prefix}-a"]["dlq_depth"] == 0
    # Without --metrics-url nothing is measured, and nothing is made up.
    assert all(r["requests"] is None and r["monthly_cost"] is None for r in rows.values())

    code, out, err = await asyncio.to_thread(cli, aws, "iam-policy", "-t", str(path))
    assert code == 0, err
    policies = json.loads(out)
    arn = "arn:aws:sqs:us-east-1:000000000000:"
    sources = sorted(arn + n for n in (f"{prefix}-a", f"{prefix}-b", f"{prefix}-c", f"{prefix}-l.fifo"))
    consume, move = policies["worker"]["Statement"]
    assert consume["Resource"] == sources
    assert move["Sid"] == "MoveToDeadLetterQueues"
    assert set(move["Action"]) == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    assert all(r.startswith(arn) and "-dlq" in r for r in move["Resource"])
    assert set(consume["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    producer = {s["Sid"]: s for s in policies["producer"]["Statement"]}
    assert producer["SendToQueues"]["Resource"] == sources
    assert producer["PublishToTopics"]["Resource"] == [f"arn:aws:sns:us-east-1:000000000000:{prefix}-orders"]
    # Offline, for another account: no AWS call at all.
    offline = run_worker(
        [
            "iam-policy",
            "-t",
            str(path),
            "--account-id",
            "123456789012",
            "--region",
            "eu-west-1",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ]
    )
    assert offline.returncode == 0, offline.stderr
    assert f"arn:aws:sqs:eu-west-1:123456789012:{prefix}-a" in offline.stdout


async def test_stats_shows_the_request_cost_the_running_workers_measured(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stats --metrics-url`` reads a running worker's /metrics over HTTP (the command runs
    in-process, one run after another: a subprocess each would cost a second of imports)."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    consumed, other = f"{prefix}-a", f"{prefix}-b"
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump({"name": prefix, "queues": {consumed: {}, other: {}}}))
    url = (await aws.sqs.create_queue(QueueName=consumed))["QueueUrl"]
    await aws.sqs.create_queue(QueueName=other)
    config = tmp_path / "worker.yaml"  # the key `orders` is not the queue's name: -c maps it
    config.write_text(
        yaml.safe_dump(
            {
                "aws": {"endpoint_url": aws.endpoint, "region": "us-east-1", "startup_timeout": 5},
                "queues": {
                    "orders": {
                        "name": consumed,
                        "handlers": ["tests.support.noop"],
                        "wait_time_seconds": 1,
                        "pollers": 1,
                    }
                },
                "health": {"enabled": True, "host": "127.0.0.1", "port": 0},
                "log": {"summary_interval": 3600},
            }
        )
    )
    n = 10
    await aws.send_many(url, [{"n": i} for i in range(n)], "job")
    router = Router()
    router.add("job", lambda payload: None)

    def requests_now(worker: Supervisor) -> float:
        return sum(
            s.value
            for family in worker.metrics.requests_by_queue.collect()
            for s in family.samples
            if s.labels["queue"] == "orders"
        )

    async with running(load_settings(str(config)), router) as worker:
        await eventually(lambda: worker.consumers[0].counters.succeeded == n, timeout=20)
        assert worker.health is not None
        where = ["--endpoint-url", aws.endpoint, "--region", "us-east-1"]
        base = [
            "stats",
            "-t",
            str(topology),
            *where,
            "--metrics-url",
            f"http://127.0.0.1:{worker.health.port}",
        ]
        before = requests_now(worker)
        standard = await ainvoke(capsys, *base, "-c", str(config), "--sample", "2", "--json")
        dearer = await ainvoke(
            capsys, *base, "-c", str(config), "--sample", "0", "--json", "--price-per-million", "4"
        )
        table = await ainvoke(capsys, *base, "-c", str(config), "--sample", "0")
        unmapped = await ainvoke(capsys, *base, "--sample", "0", "--json")
        after = requests_now(worker)
    unreachable = await ainvoke(
        capsys, "stats", "-t", str(topology), *where, "--metrics-url", "http://127.0.0.1:9"
    )
    bad = await ainvoke(capsys, "stats", "-t", str(topology), *where, "--metrics-url", "127.0.0.1:9")

    for run in (standard, dearer, table, unmapped):
        assert run.code == 0, run.err
    rows = {r["name"]: r for r in json.loads(standard.out)}
    a = rows[consumed]
    assert a["received"] == n
    assert before <= a["requests"] <= after  # the worker's own counter, read by the command
    assert a["requests_per_message"] == pytest.approx(a["requests"] / n)
    assert a["rate_basis"] == "interval"
    assert 2 <= a["rate_seconds"] < 5
    # The requests between the command's two reads: some (the poller's receives), and no more
    # than the counter rose around the whole command.
    in_window = round(a["requests_per_second"] * a["rate_seconds"])
    assert 1 <= in_window <= after - before
    assert a["price_per_million"] == 0.40
    assert a["monthly_cost"] == pytest.approx(a["requests_per_second"] * 30 * 86400 * 0.40 / 1e6)
    # A queue no worker reports: not measured.
    assert rows[other]["requests"] is None
    assert rows[other]["monthly_cost"] is None
    # --price-per-million: priced at 4 USD (the rate here: the average since the worker started).
    d = next(r for r in json.loads(dearer.out) if r["name"] == consumed)
    assert d["price_per_million"] == 4.0
    assert d["rate_basis"] == "since_start"
    assert d["monthly_cost"] == pytest.approx(d["requests_per_second"] * 30 * 86400 * 4.0 / 1e6)
    assert d["monthly_cost"] / d["requests_per_second"] == pytest.approx(
        10 * a["monthly_cost"] / a["requests_per_second"]
    )
    # The table: the three columns, and how the rate was taken (--sample 0: since start).
    lines = table.out.splitlines()
    header = lines[0].split()
    assert header[:6] == ["queue", "visible", "in", "flight", "delayed", "DLQ"]
    assert header[7:10] == ["req/msg", "req/s", "$/month"]
    cells = next(line for line in lines if line.startswith(consumed)).split()
    assert before / n - 0.01 <= float(cells[6]) <= after / n + 0.01  # req/msg
    assert (
        abs(float(cells[8].removeprefix("$")) - float(cells[7]) * 2.592 * 0.40) <= 0.011
    )  # $/month of req/s
    assert "average since each worker started" in table.out
    assert "$0.40 per million requests (FIFO $0.50)" in table.out
    # Without -c, the metrics' queue key names no queue of the topology: said, not guessed.
    assert "name queues that have no row here: orders" in unmapped.err
    assert next(r for r in json.loads(unmapped.out) if r["name"] == consumed)["requests"] is None
    # A metrics endpoint that does not answer, and one that is not a URL: one line, exit 5 and 2.
    assert unreachable.code == 5
    assert "cannot read worker metrics at http://127.0.0.1:9/metrics" in unreachable.one_line_error()
    assert bad.code == 2
    assert "--metrics-url" in bad.one_line_error()


async def test_provision_prune_asks_shows_counts_and_refuses_a_non_empty_queue(
    aws: Aws, tmp_path: Path
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    full = {
        "name": prefix,
        "queues": {
            f"{prefix}-dlq": {},
            f"{prefix}-src": {"dead_letter": {"queue": f"{prefix}-dlq", "max_receive_count": 3}},
        },
    }
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(full))
    code, out, err = await asyncio.to_thread(cli, aws, "provision", "-t", str(path))
    assert code == 0, err
    dlq_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-dlq"))["QueueUrl"]
    src_url = (await aws.sqs.get_queue_url(QueueName=f"{prefix}-src"))["QueueUrl"]
    await aws.send(dlq_url, {"x": 1}, "t")
    await aws.send(dlq_url, {"x": 2}, "t")
    # The DLQ leaves the file (and the source its redrive policy with it).
    path.write_text(yaml.safe_dump({"name": prefix, "queues": {f"{prefix}-src": {}}}))

    code, out, err = await asyncio.to_thread(cli, aws, "provision", "-t", str(path), "--prune")
    assert code == 6, err  # no terminal to ask on, no --yes
    assert "pass --yes" in err
    assert f"prune scope: resources tagged with topology name {prefix!r}" in err
    assert "holds 2 message(s)" in out
    assert await aws.total(dlq_url) == 2  # nothing deleted

    code, out, err = await asyncio.to_thread(cli, aws, "provision", "-t", str(path), "--prune", "--yes")
    assert code == 6, err
    assert f"{prefix}-dlq" in err
    assert "--force" in err
    assert await aws.total(dlq_url) == 2

    code, out, err = await asyncio.to_thread(
        cli, aws, "provision", "-t", str(path), "--prune", "--yes", "--force"
    )
    assert code == 0, err
    names = [
        u.rsplit("/", 1)[-1] for u in (await aws.sqs.list_queues(QueueNamePrefix=prefix)).get("QueueUrls", [])
    ]
    assert names == [f"{prefix}-src"]
    attrs = (await aws.sqs.get_queue_attributes(QueueUrl=src_url, AttributeNames=["All"]))["Attributes"]
    assert "RedrivePolicy" not in attrs or not attrs["RedrivePolicy"]


async def test_publish_without_type_warns_when_every_subscription_filters_on_it(aws: Aws) -> None:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    data = fan_out_topology(prefix)
    # Only the subscriptions that filter on the type attribute (a and b).
    data["subscriptions"] = [s for s in data["subscriptions"] if "type" in s.get("filter_policy", {})]
    await provision(aws, Topology(**data))
    code, _, err = await asyncio.to_thread(cli, aws, "publish", f"{prefix}-orders", "--body", '{"x": 1}')
    assert code == 0, err
    assert "reaches no queue" in err
    code, _out, err = await asyncio.to_thread(
        cli, aws, "publish", f"{prefix}-orders", "--type", "order.placed", "--body", '{"x": 1}'
    )
    assert code == 0, err
    assert "warning" not in err


async def test_redrive_with_a_limit_shows_the_limit_in_its_bar_and_summary(aws: Aws) -> None:
    """Was: `--limit 3` of 9 showed a 9/9 bar and "left in DLQ 9"."""
    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    for i in range(9):
        await aws.send(queue.dlq_url, {"n": i}, "t")
    code, out, err = await asyncio.to_thread(cli, aws, "dlq", "redrive", queue.name, "--limit", "3")
    assert code == 0, err
    assert "moved 3 of 9, skipped 6, failed 0; left in DLQ 6 (manual)" in out
    assert "3/3" in err
    assert "9/9" not in err
    assert await aws.total(queue.dlq_url) == 6


async def test_dlq_show_times_are_sent_and_dead_lettered_not_the_first_look(aws: Aws) -> None:
    """Was: a "first received" column: ApproximateFirstReceiveTimestamp, which for a message
    nobody had received in the DLQ is the moment `dlq show` first looked."""
    from worker.cli.dlq import _ts

    queue = await aws.queue(max_receive_count=1)
    assert queue.dlq_url
    # One moved by SQS's redrive policy: received once, given back, received again.
    await aws.send(queue.url, {"by": "sqs"}, "t")
    original = None
    for _ in range(2):
        got = await aws.sqs.receive_message(
            QueueUrl=queue.url, WaitTimeSeconds=1, VisibilityTimeout=0, MessageSystemAttributeNames=["All"]
        )
        original = original or got["Messages"][0]["Attributes"]["SentTimestamp"]
    assert original is not None
    # One the worker moved: a copy with the reason and the original id.
    await aws.sqs.send_message(
        QueueUrl=queue.dlq_url,
        MessageBody='{"by": "worker"}',
        MessageAttributes={
            "worker.failure_reason": {"DataType": "String", "StringValue": "unknown type 'x'"},
            "worker.original_message_id": {"DataType": "String", "StringValue": "m-1"},
        },
    )

    dlq_url = queue.dlq_url

    async def both() -> bool:
        return await aws.total(dlq_url) == 2

    await eventually(both, timeout=10)
    await asyncio.sleep(1.5)  # a look later than either event
    code, out, err = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name, "--json")
    assert code == 0, err
    shown = {json.loads(m["excerpt"])["by"]: m for m in json.loads(out)}
    by_sqs, by_worker = shown["sqs"], shown["worker"]
    assert (by_sqs["moved_by_worker"], by_sqs["dead_lettered_ms"]) == (False, None)
    assert by_sqs["original_sent_ms"] == int(original)  # SQS keeps the original SentTimestamp
    assert (by_worker["moved_by_worker"], by_worker["original_sent_ms"]) == (True, None)
    assert by_worker["dead_lettered_ms"] == by_worker["sent_ms"]
    assert by_worker["dead_lettered_ms"] < by_worker["first_received_ms"]  # the look came later
    code, out, _ = await asyncio.to_thread(cli, aws, "dlq", "show", queue.name)
    header = next(line for line in out.splitlines() if line.startswith("message id"))
    assert "sent" in header
    assert "dead-lettered" in header
    assert "first received" not in header
    assert _ts(int(original)) in out
    assert _ts(by_worker["dead_lettered_ms"]) in out
    assert _ts(by_worker["first_received_ms"]) not in out  # 1.5 s after every other time shown
