# syntax=docker/dockerfile:1
# The worker image: dependencies from uv.lock, a slim non-root runtime, SIGTERM straight to
# the worker (exec-form entrypoint, the worker is PID 1 and handles the signal itself).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY worker ./worker
COPY handlers ./handlers
RUN uv sync --locked --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY config ./config
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_HEALTH__ENABLED=true \
    WORKER_HEALTH__PORT=8080 \
    WORKER_LOG__FORMAT=json
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["worker"]
CMD ["run", "--config", "/app/config/worker.yaml"]
