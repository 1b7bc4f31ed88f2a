"""Whether tracing may be on, decided without importing OpenTelemetry (about 100 ms of
start-up that a worker without tracing should not pay): an application imported its trace
API (and may have installed a provider), or an ``OTEL_*`` variable asks for an exporter.
``worker.observe.tracing.configure`` then decides for real."""

from __future__ import annotations

import os
import sys

EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return "opentelemetry.trace" in sys.modules or any(os.environ.get(v) for v in EXPORTER_VARIABLES)
