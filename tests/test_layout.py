"""The package's architecture, checked: no import cycle between any two modules, and the
layer contracts of pyproject.toml's ``[tool.importlinter]`` (also ``uv run lint-imports``)."""

from __future__ import annotations

import graphlib
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.servers import ROOT


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("worker", "handlers", "benchmarks", include_external_packages=False)


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    modules = {m for m in graph.modules if "." in m or m in ("worker", "handlers", "benchmarks")}
    order: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for module in modules:
        # A package's __init__ re-exporting its children is not a cycle of roles.
        imported = {
            m for m in graph.find_modules_directly_imported_by(module) if not module.startswith(m + ".")
        }
        order.add(module, *imported)
    try:
        order.prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_cycle_check_sees_type_checking_imports() -> None:
    # health.py once imported the supervisor under TYPE_CHECKING, a cycle in disguise.
    graph = _graph()
    assert "worker.runtime.supervisor" not in graph.find_modules_directly_imported_by("worker.observe.health")
    assert "worker.observe.health" in graph.find_modules_directly_imported_by("worker.runtime.supervisor")


def test_layer_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_every_module_imports() -> None:
    import worker

    for info in pkgutil.walk_packages(worker.__path__, "worker."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def test_public_api_stays_at_the_top() -> None:
    import worker
    from worker import producer

    assert {"Message", "PermanentFailure", "Retry", "Router"} <= set(worker.__all__)
    assert hasattr(producer, "Producer")
    for name in worker.__all__:  # the S3 event models too, imported on first use
        assert getattr(worker, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        worker.Nope  # noqa: B018
