"""moto's server answering one request at a time: ``python -m bench.moto_server PORT``.

moto's backends are not thread-safe, and ``python -m moto.server`` serves each request in a
thread of its own: a DynamoDB transaction deep-copies the tables while another request
writes them, and moto answers ``TransactWriteItems`` with a 500 ("dictionary changed size
during iteration", seen in its log: 458 of them in one run of the sigkill+idempotency
scenario, which then stalled). The same application, unthreaded, has no such race."""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
