# syntax=docker/dockerfile:1
# The worker image: dependencies from uv.lock, a slim non-root runtime, SIGTERM straight to
# the worker (exec-form entrypoint, the worker is PID 1 and handles the signal itself).
#
# Base images are pinned by digest; the tag beside each digest says what it is and is ignored
# by the build. Both stages use the same Python image (the venv records the interpreter's
# path). To refresh a pin, take the "Digest:" (the multi-arch index) of:
#   docker buildx imagetools inspect python:3.12-slim
#   docker buildx imagetools inspect ghcr.io/astral-sh/uv:0.13.0
# Dependabot (package-ecosystem "docker") or Renovate can keep tag and digest current.
#
#   docker build -t sqs-worker:local \
#     --build-arg VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) \
#     --build-arg REVISION=$(git rev-parse HEAD) .
# (The version lives in pyproject.toml alone; the running worker reads it from the installed
# metadata: `worker --version`.)

FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea AS build
# uv from its own image (a static binary), the version that uv.lock is checked with.
COPY --from=ghcr.io/astral-sh/uv:0.13.0@sha256:cdc6093146eb3ff6a40107b38f008b789e050e77ad87865e381d9917da55a168 /uv /uvx /bin/
# Bytecode compiled at build time; copy out of the cache mount rather than hard-link to it;
# the image's own interpreter, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, from the lock alone, so code and README edits reuse this layer. uv's
# cache lives in a build cache mount: shared between builds, never part of a layer.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra tracing --no-install-project
# The project itself; hatchling needs README.md (pyproject's `readme`) to build it.
COPY README.md ./
COPY worker ./worker
# The demo's handlers and configuration go into the wheel as data (pyproject.toml).
COPY handlers ./handlers
COPY config ./config
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra tracing --no-editable

FROM python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=https://github.com/example/sqs-worker
LABEL org.opencontainers.image.title="aio-sqs-worker" \
      org.opencontainers.image.description="An asyncio worker service for AWS SQS and SNS" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
# Example configuration (config/worker.yaml sets no region: AWS_REGION decides). On
# Kubernetes a ConfigMap is mounted over /app/config (deploy/k8s).
COPY config ./config
# The service's handler modules: a plug-in directory, imported from the working directory
# (`--app-dir`, $WORKER_APP_DIR), not a package of the installed distribution.
COPY handlers ./handlers
ENV PATH=/app/.venv/bin:$PATH \
    WORKER_APP_DIR=/app \
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
