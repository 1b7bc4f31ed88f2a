"""The container, compose and Kubernetes files, checked offline; and the image's command
run here, against LocalStack, exactly as the entrypoint runs it.

`kubectl apply -k` is checked without kubectl: tests/support/kustomize.py renders
deploy/k8s (the base) and deploy/k8s/overlays/keda as kustomize does, stopping where it
would, and the rendered resources are validated against Kubernetes 1.30 and KEDA's schemas."""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import typer
import typer.core
import yaml

from tests.conftest import Aws, eventually
from tests.servers import ROOT, free_port
from tests.support import kustomize
from worker.cli.main import app as worker_app
from worker.observe.metrics import Metrics
from worker.settings import WorkerSettings, load_settings

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


def test_compose_waits_for_the_workers_whole_stop_and_a_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: stop_grace_period equal to grace + flush, no time left to exit before SIGKILL.
    The same rule as the Deployment's terminationGracePeriodSeconds."""
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    for key in list(os.environ):
        if key.startswith("WORKER_"):
            monkeypatch.delenv(key)
    _, image_env = _dockerfile()
    environment = {k: str(v) for k, v in worker["environment"].items() if k.startswith("WORKER_")}
    for key, value in {**image_env, **environment}.items():
        if key.startswith("WORKER_"):
            monkeypatch.setenv(key, value)
    settings = load_settings(ROOT / "config" / "worker.yaml")
    period = worker["stop_grace_period"]
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", period)
    assert period, period
    assert match, period
    seconds = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    assert seconds >= settings.shutdown_grace + settings.shutdown_flush + 5, (period, settings.shutdown_grace)


K8S = ROOT / "deploy" / "k8s"
KEDA_OVERLAY = K8S / "overlays" / "keda"
BASE_KINDS = {"ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget"}


def _one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _validate(resources: list[dict[str, Any]], tmp_path: Path) -> None:
    """Core kinds against Kubernetes 1.30's OpenAPI schemas (strict: no unknown fields); KEDA's
    against tests/schemas/keda.schema.json (from KEDA's CRDs, see its $comment)."""
    core = [r for r in resources if not r["apiVersion"].startswith("keda.sh/")]
    files = []
    for i, resource in enumerate(core):
        path = tmp_path / f"{i}-{resource['kind']}.yaml"
        path.write_text(yaml.safe_dump(resource))
        files.append(str(path))
    result = run(str(BIN / "kubernetes-validate"), "--strict", "-k", "1.30.0", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    schema = json.loads((ROOT / "tests" / "schemas" / "keda.schema.json").read_text())
    for resource in resources:
        if resource["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(resource, schema)


def test_base_is_what_kubectl_apply_k_deploy_k8s_applies(tmp_path: Path) -> None:
    resources = kustomize.build(K8S)
    assert {r["kind"] for r in resources} == BASE_KINDS
    assert len(resources) == len(BASE_KINDS)
    # Nothing that needs a CRD: `kubectl apply -k deploy/k8s` works on a cluster without KEDA.
    assert not [r for r in resources if r["apiVersion"].startswith("keda.sh/")]
    _validate(resources, tmp_path)
    assert _one(resources, "Deployment")["spec"]["replicas"] >= 2


def test_keda_overlay_scales_on_every_consumed_queue(tmp_path: Path) -> None:
    base = kustomize.build(K8S)
    resources = kustomize.build(KEDA_OVERLAY)
    assert {r["kind"] for r in resources} == BASE_KINDS | {"ScaledObject", "TriggerAuthentication"}
    _validate(resources, tmp_path)
    deployment = _one(resources, "Deployment")
    # KEDA's HPA owns the replica count; otherwise every apply would reset it.
    assert "replicas" not in deployment["spec"]
    # Otherwise the overlay is the base, unchanged.
    base_deployment = copy.deepcopy(_one(base, "Deployment"))
    del base_deployment["spec"]["replicas"]
    assert deployment == base_deployment
    for kind in BASE_KINDS - {"Deployment"}:
        assert _one(resources, kind) == _one(base, kind)

    scaled = _one(resources, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["spec"].get("minReplicaCount", 0) >= 1
    auths = {r["metadata"]["name"] for r in resources if r["kind"] == "TriggerAuthentication"}
    region = {e["name"]: e.get("value") for e in _container(deployment)["env"]}["AWS_REGION"]
    queues = _configmap_settings(resources).queues
    triggers = scaled["spec"]["triggers"]
    assert len(triggers) == len(queues), "one trigger per consumed queue, none for any other"
    for key, queue in queues.items():
        name = queue.name or key
        mine = [t for t in triggers if t["metadata"]["queueURL"].rsplit("/", 1)[-1] == name]
        assert len(mine) == 1, f"queue {name}: {len(mine)} triggers"
        meta = mine[0]["metadata"]
        # A replica works on max_in_flight messages of the queue at once (in flight counted).
        assert meta["queueLength"] == str(queue.max_in_flight), name
        assert meta["scaleOnInFlight"] == "true"
        # The queue KEDA watches is the one the pods consume: the Deployment's region.
        assert meta["awsRegion"] == region, name
        assert meta["queueURL"].startswith(f"https://sqs.{region}.amazonaws.com/"), name
        assert mine[0]["authenticationRef"]["name"] in auths


def _configmap_settings(resources: list[dict[str, Any]]) -> WorkerSettings:
    deployment = _one(resources, "Deployment")
    config_path = _config_path(deployment)
    data = _one(resources, "ConfigMap")["data"]
    return WorkerSettings.model_validate(yaml.safe_load(data[Path(config_path).name]))


def _config_path(deployment: dict[str, Any]) -> str:
    args = _container(deployment)["args"]
    assert args[0] == "run"
    return str(args[args.index("--config") + 1])


def test_the_pod_runs_the_configmap_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    resources = kustomize.build(K8S)
    deployment = _one(resources, "Deployment")
    configmap = _one(resources, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)

    # The config path in the container's args is a key of the ConfigMap, where it is mounted.
    config_path = Path(_config_path(deployment))
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    assert mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]  # the hash-suffixed name
    assert "items" not in volume["configMap"]
    text = configmap["data"][config_path.name]
    assert yaml.safe_load(text) == yaml.safe_load((K8S / "base" / "worker.yaml").read_text())

    # The file sets no region and no endpoint: the Deployment's AWS_REGION decides, real SQS.
    raw = yaml.safe_load(text)
    assert "region" not in (raw.get("aws") or {})
    assert "endpoint_url" not in (raw.get("aws") or {})

    # Loaded as the container loads it: the image's environment, then the Deployment's.
    for key in list(os.environ):
        if key.startswith("WORKER_") or key in {"AWS_REGION", "AWS_DEFAULT_REGION"}:
            monkeypatch.delenv(key)
    _, image_env = _dockerfile()
    container_env = {e["name"]: e["value"] for e in container["env"]}
    for key, value in {**image_env, **container_env}.items():
        if key.startswith(("WORKER_", "AWS_")):
            monkeypatch.setenv(key, value)
    path = tmp_path / config_path.name
    path.write_text(text)
    settings = load_settings(path)
    assert settings.aws.region is None
    assert settings.aws.resolved_region() == container_env["AWS_REGION"]
    assert settings.aws.resolved_endpoint() is None
    assert settings.log.format == "json"
    assert settings.health.enabled
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.health.port == ports["http"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Kubernetes must wait for the worker's whole stop (grace + flush) before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= settings.shutdown_grace + settings.shutdown_flush + 5
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True

    # The same queues and handlers as the example configuration, and the handlers import.
    example = load_settings(ROOT / "config" / "worker.yaml")
    assert {k: q.handlers for k, q in settings.queues.items()} == {
        k: q.handlers for k, q in example.queues.items()
    }
    for queue in settings.queues.values():
        for module in queue.handlers:
            importlib.import_module(module)


def test_the_disruption_budget_covers_the_worker_pods() -> None:
    resources = kustomize.build(K8S)
    pdb = _one(resources, "PodDisruptionBudget")
    deployment = _one(resources, "Deployment")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    # maxUnavailable: a single replica (KEDA's minimum) never blocks a node drain.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


def test_the_kustomize_renderer_stops_where_kubectl_would(tmp_path: Path) -> None:
    """tests/support/kustomize.py fails where kustomize itself does (each case checked against
    kustomize api v0.21.3), and on a field it does not implement, rather than ignore it."""
    configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n"
    cases = {
        "missing file": {"k/kustomization.yaml": "resources:\n- nope.yaml\n"},
        "file outside": {"cm.yaml": configmap, "k/kustomization.yaml": "resources:\n- ../cm.yaml\n"},
        "cycle": {"k/kustomization.yaml": "resources: []\n", "k/o/kustomization.yaml": "resources:\n- ..\n"},
        "component as resource": {
            "k/kustomization.yaml": "resources:\n- c\n",
            "k/c/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
        },
        "kustomization as component": {
            "k/kustomization.yaml": "components:\n- c\n",
            "k/c/kustomization.yaml": "resources: []\n",
        },
        "duplicate": {
            "k/kustomization.yaml": "resources:\n- a.yaml\n- b.yaml\n",
            "k/a.yaml": configmap,
            "k/b.yaml": configmap,
        },
        "remove a missing field": {
            "k/kustomization.yaml": "resources:\n- a.yaml\npatches:\n- path: p.yaml\n  target:\n    kind: ConfigMap\n",
            "k/a.yaml": configmap,
            "k/p.yaml": "- op: remove\n  path: /spec/replicas\n",
        },
        "not implemented": {"k/kustomization.yaml": "namePrefix: x-\n"},
    }
    for case, files in cases.items():
        root = tmp_path / case.replace(" ", "-")
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        start = root / "k" / "o" if case == "cycle" else root / "k"
        try:
            kustomize.build(start)
        except kustomize.KustomizeError:
            continue
        pytest.fail(f"{case}: rendered without an error")


def test_configmap_hash_suffix_is_kustomizes() -> None:
    # From kustomize's api/hasher tests, and from `kustomize build` (api v0.21.3) output.
    assert kustomize.configmap_hash({}) == "6ct58987ht"
    assert kustomize.configmap_hash({"one": ""}) == "9g67k2htb6"
    assert kustomize.configmap_hash({"a": "b"}) == "4h2mbtbbt6"
    tricky = 'a<b>&"\\ \b \n\t\u00e9\u2028 z\n'
    assert kustomize.configmap_hash({"k": tricky, "f.txt": tricky}) == "42h472gtb8"


def test_shipped_config_leaves_the_region_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "config" / "worker.yaml"
    raw = yaml.safe_load(path.read_text())
    assert "region" not in (raw.get("aws") or {})
    for key in list(os.environ):
        if key.startswith("WORKER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert load_settings(path).aws.resolved_region() == "eu-west-1"
    monkeypatch.delenv("AWS_REGION")
    assert load_settings(path).aws.resolved_region() == "us-east-1"
    monkeypatch.setenv("WORKER_AWS__REGION", "ap-south-1")
    assert load_settings(path).aws.resolved_region() == "ap-south-1"
    # Whatever runs the image with that file sets the region itself.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "/app/config/worker.yaml" in service.get("command", []):
            assert "AWS_REGION" in service["environment"], name


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    text = "\n".join(lines).replace("\\\n", " ")
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_dockerfile_pins_its_images_and_caches_uv() -> None:
    instructions = _instructions()
    pinned = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")  # tag for people, digest for builds
    froms = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert len(froms) == 2
    for image in froms:
        assert pinned.match(image), image
    assert froms[0] == froms[1]  # the venv records the interpreter's path
    uv = [args for op, args in instructions if op == "COPY" and "--from=ghcr.io/astral-sh/uv" in args]
    assert len(uv) == 1
    assert pinned.match(uv[0].split()[0].removeprefix("--from=")), uv[0]
    assert uv[0].split()[1:] == ["/uv", "/uvx", "/bin/"]
    runs = [args for op, args in instructions if op == "RUN"]
    assert not [r for r in runs if "pip install" in r]
    syncs = [r for r in runs if "uv sync" in r]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--mount=type=cache,target=/root/.cache/uv" in sync
        assert "--locked" in sync
    assert "UV_NO_CACHE" not in (ROOT / "Dockerfile").read_text()


def test_dockerfile_keeps_readme_out_of_the_dependency_layer() -> None:
    instructions = _instructions()
    build = instructions[: [i for i, (op, _) in enumerate(instructions) if op == "FROM"][1]]
    first = next(i for i, (op, args) in enumerate(build) if op == "RUN" and "--no-install-project" in args)
    second = next(i for i, (op, args) in enumerate(build) if op == "RUN" and "uv sync" in args and i > first)
    copied_before = " ".join(args for op, args in build[:first] if op in {"COPY", "ADD"})
    assert "README" not in copied_before
    assert "pyproject.toml" in copied_before
    assert "uv.lock" in copied_before
    # hatchling reads README.md (pyproject's readme) when the project itself is built.
    assert any(op == "COPY" and "README.md" in args for op, args in build[first:second])


def test_dockerfile_labels_the_image() -> None:
    instructions = _instructions()
    final = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][1] :]
    args = dict(re.findall(r"^(\w+)=(\S*)$", "\n".join(a for op, a in final if op == "ARG"), re.M))
    labels = dict(re.findall(r'([\w.]+)="([^"]*)"', " ".join(a for op, a in final if op == "LABEL")))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    oci = "org.opencontainers.image."
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert labels.get(oci + key), key
    assert labels[oci + "title"] == project["name"]
    assert labels[oci + "licenses"] == project["license"]["text"]
    assert labels[oci + "version"] == "${VERSION}"
    # The version lives in pyproject.toml alone: the build command in the header reads it.
    assert args["VERSION"] == "unknown"
    assert "--build-arg VERSION=$(sed -n 's/^version = " in (ROOT / "Dockerfile").read_text()


def test_the_deploy_files_give_the_worker_commands_it_has() -> None:
    """Every worker command line in compose, the image and the Deployment parses (flags that
    exist, values that convert), with the image's /app mapped to this checkout."""
    cli = typer.main.get_command(worker_app)
    assert isinstance(cli, typer.core.TyperGroup)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {f"compose {name}": s["command"] for name, s in compose["services"].items() if "command" in s}
    argv, _ = _dockerfile()
    commands["image"] = argv[1:]
    commands["deployment"] = _container(_one(kustomize.build(K8S), "Deployment"))["args"]
    assert commands.keys() >= {"compose provision", "compose worker", "compose producer"}
    for where, command in commands.items():
        args = [a.replace("/app/", f"{ROOT}/") for a in command]
        assert args[0] in cli.commands, where
        try:
            cli.commands[args[0]].make_context(args[0], args[1:])
        except typer.TyperException as exc:  # click's errors (typer vendors click)
            pytest.fail(f"{where}: {command}: {exc}")


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
    # Every dashboard variable an expression uses is defined (the price ones too); the
    # cost panel prices FIFO queues with their own variable.
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    variables = {name for expr in exprs for name in re.findall(r"\$(\w+)", expr) if not name.startswith("__")}
    assert variables <= defined, variables - defined
    assert {"price_per_million", "fifo_price_per_million"} <= variables


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


def _events(log: Path) -> list[str]:
    """The ``event`` of every JSON log line (however the renderer spaces its JSON)."""
    events: list[str] = []
    for line in log.read_text().splitlines():
        try:
            events.append(str(json.loads(line).get("event")))
        except ValueError:
            continue
    return events


async def test_the_image_command_runs_and_handles_messages(aws: Aws, tmp_path: Path) -> None:
    argv, image_env = _dockerfile()
    assert argv[:2] == ["worker", "run"]
    # The image's paths, mapped to this checkout: /app is the repository, worker is on PATH.
    argv = [str(BIN / argv[0]), *[a.replace("/app/", f"{ROOT}/") for a in argv[1:]]]
    queue = await aws.queue()
    port = free_port()
    env = {
        k: v.replace("/app", str(ROOT)) for k, v in image_env.items() if k.startswith(("WORKER_", "PYTHON"))
    }
    assert env["WORKER_APP_DIR"] == str(ROOT)  # the handlers/ plug-in directory beside config/
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
        "WORKER_QUEUES__SHIPPING__WAIT_TIME_SECONDS": "1",
        "WORKER_QUEUES__INVOICING__WAIT_TIME_SECONDS": "1",
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
        await eventually(lambda: _events(log).count("message_succeeded") == 5, timeout=10)
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
