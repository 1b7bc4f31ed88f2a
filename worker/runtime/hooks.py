"""Handler modules' start-up and shutdown hooks (``Router.on_startup`` / ``on_shutdown``),
run by the supervisor once per process."""

from __future__ import annotations

from typing import Literal

from worker.errors import WorkerError
from worker.messages.resources import Resources
from worker.messages.routing import Registry, Router
from worker.observe.logs import get_logger

log = get_logger()


class StartupError(WorkerError):
    """A start-up hook failed, or a handler needs a resource no hook provided."""


def routers(registries: dict[str, Registry]) -> list[Router]:
    """Every router of every queue, each once (one module may serve several queues)."""
    seen: dict[int, Router] = {}
    for registry in registries.values():
        for router in registry.routers:
            seen.setdefault(id(router), router)
    return list(seen.values())


async def run_hooks(
    registries: dict[str, Registry], resources: Resources, phase: Literal["startup", "shutdown"]
) -> None:
    """Run every router's start-up (before the first receive) or shutdown hooks (after the
    last settle, in reverse). A failing start-up hook stops the worker."""
    hooks = [h for r in routers(registries) for h in (r.startup if phase == "startup" else r.shutdown)]
    if phase == "shutdown":
        hooks.reverse()
    for hook in hooks:
        name = f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', repr(hook))}"
        try:
            await hook(resources)
        except Exception as exc:
            if phase == "startup":
                raise StartupError(f"start-up hook {name} failed: {type(exc).__name__}: {exc}") from exc
            log.error("shutdown_hook_failed", hook=name, error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            log.info(f"{phase}_hook_done", hook=name)
    if phase == "shutdown":
        return
    for registry in registries.values():
        for route in registry.routes.values():
            missing = [k.__name__ for k in route.resources if k not in resources]
            if missing:
                raise StartupError(
                    f"handler {route.source} needs {', '.join(missing)}, which no start-up hook provided"
                )
