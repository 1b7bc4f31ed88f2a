"""The container, compose and Kubernetes files, checked offline; and the image's command
run here, against LocalStack, exactly as the entrypoint runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import yaml

from tests.conftest import Aws, eventually
from tests.servers import ROOT, free_port
from worker.observe.metrics import Metrics

BIN = Path(sys.executable).parent
COMPOSE = Path(str(__import__("compose").__file__)).parent / "docker-compose"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_dockerfile_is_hadolint_clean() -> None:
    result = run(str(BIN / "hadolint"), "--failure-threshold", "warning", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    schema = run(
        str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    compose = run(str(COMPOSE), "-f", "docker-compose.yml", "config", "-q")
    assert compose.returncode == 0, compose.stderr
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = data["services"]
    assert services["localstack"]["image"] == "localstack/localstack:4.14"
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["worker"]  # so that --scale worker=N works
    assert services["provision"]["command"][0] == "provision"


def test_kubernetes_manifests_are_valid() -> None:
    k8s = ROOT / "deploy" / "k8s"
    result = run(
        str(BIN / "kubernetes-validate"),
        "--strict",
        "-k",
        "1.30.0",
        str(k8s / "deployment.yaml"),
        str(k8s / "serviceaccount.yaml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schema = json.loads((ROOT / "tests" / "schemas" / "keda.schema.json").read_text())
    docs = list(yaml.safe_load_all((k8s / "keda-scaledobject.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        jsonschema.validate(doc, schema)
    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    # Kubernetes must wait longer than the worker's own grace period before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= float(env["WORKER_SHUTDOWN_GRACE"]) + 10
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_dashboard_uses_only_metrics_the_worker_exports() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sqs-worker.json").read_text())
    exported = set()
    for metric in Metrics().registry.collect():
        for suffix in ("", "_total", "_bucket", "_count", "_sum"):
            exported.add(metric.name + suffix)
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"sqs_worker_[a-z_]+", target["expr"])
    }
    assert used
    assert used <= exported, used - exported


def _dockerfile() -> tuple[list[str], dict[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]  # the runtime stage
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.M):
        for key, value in re.findall(r"(\w+)=(\S+)", line):
            env[key] = value
    return entry + cmd, env


async def test_the_image_command_runs_and_handles_messages(aws: Aws, tmp_path: Path) -> None:
    argv, image_env = _dockerfile()
    assert argv[:2] == ["worker", "run"]
    # The image's paths, mapped to this checkout: /app is the repository, worker is on PATH.
    argv = [str(BIN / argv[0]), *[a.replace("/app/", f"{ROOT}/") for a in argv[1:]]]
    queue = await aws.queue()
    port = free_port()
    env = {k: v for k, v in image_env.items() if k.startswith(("WORKER_", "PYTHON"))}
    env |= {
        "WORKER_HEALTH__PORT": str(port),
        "WORKER_HEALTH__HOST": "127.0.0.1",
        "AWS_ENDPOINT_URL": aws.endpoint,
        "WORKER_QUEUES__BILLING__NAME": queue.name,
        "WORKER_QUEUES__BILLING__WAIT_TIME_SECONDS": "1",
    }
    # Only the billing queue exists here; the file's other queues are turned into it too.
    shipping = await aws.queue()
    invoicing = await aws.queue()
    env |= {
        "WORKER_QUEUES__SHIPPING__NAME": shipping.name,
        "WORKER_QUEUES__INVOICING__NAME": invoicing.name,
    }
    order = {"order_id": "D-1", "customer_id": "c", "items": [{"sku": "x", "quantity": 1, "unit_price": 2.0}]}
    for _ in range(5):
        await aws.send(queue.url, order, "order.placed")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        await eventually(lambda: _empty(aws, queue.url), timeout=30)
        await eventually(lambda: log.read_text().count('"event": "message_succeeded"') == 5, timeout=10)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:  # the HEALTHCHECK
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines  # JSON logs, as the image sets
    assert any(line["event"] == "health_server_started" for line in lines)
    assert any(line["event"] == "shutdown_complete" for line in lines)


async def _empty(aws: Aws, url: str) -> bool:
    return await aws.total(url) == 0
