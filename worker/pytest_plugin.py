"""pytest fixtures for integration tests of your handlers against a real SQS server.

Installed with the package, pytest loads it on its own (the ``pytest11`` entry point named
``worker``): any project that depends on aio-sqs-worker has the fixture; ``-p no:worker``
turns it off.

``sqs_endpoint`` is the URL of a local SQS-compatible server for the test session: the one
in ``$SQS_WORKER_TEST_ENDPOINT`` (e.g. ``docker compose up localstack``), else moto's server
started in-process (``pip install "aio-sqs-worker[demo]"``; quick tests only: moto has a receive
race under concurrency). Credentials are set to dummies for the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    given = os.environ.get("SQS_WORKER_TEST_ENDPOINT")
    if given:
        yield given
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
