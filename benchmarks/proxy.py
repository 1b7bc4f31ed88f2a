"""An HTTP proxy between a client and an SQS endpoint that counts and can misbehave.

It counts SQS API requests per operation (``X-Amz-Target`` of the JSON protocol, or
``Action`` of the query protocol), the messages deleted by successful DeleteMessageBatch /
DeleteMessage calls, and when the first receive and the last delete happened. On command it
adds latency, answers a share of calls with ThrottlingException (400) or InternalError
(500), resets connections, or black-holes all traffic for a while.

Run: ``python -m benchmarks.proxy --port 0 --upstream http://127.0.0.1:4566`` (prints the port).
Control: ``GET /__proxy/counts``, ``POST /__proxy/reset``, ``POST /__proxy/faults`` with
``{"latency": 0.05, "error_rate": 0.2, "error": "throttle"|"500"|"mixed", "reset_rate": 0.0,
"blackhole_seconds": 30, "batch_entry_fail_rate": 0.2, "op_latency": {...},
"blackhole_ops": {...}, "blackhole_op_seconds": 60, "empty_receives": true}``. Each POST
replaces every fault set before; ``{}`` clears them all.

- ``latency``: seconds added to every request.
- ``op_latency``: ``{"ChangeMessageVisibilityBatch": 0.3}``, seconds added to requests of
  that SQS operation, on top of ``latency``.
- ``error_rate`` / ``error``: share of requests answered ThrottlingException (400),
  InternalError (500), or either at random (``mixed``), without reaching the server.
- ``reset_rate``: share of connections reset without an answer.
- ``batch_entry_fail_rate``: share of DeleteMessageBatch entries answered as failed inside
  the batch (the others are deleted).
- ``blackhole_seconds``: every request is held until this long after the POST, then its
  connection is dropped (``outcomes["blackholed"]``); nothing reaches the server.
- ``blackhole_ops``: ``{"ChangeMessageVisibilityBatch": 1}``, black-hole the next N requests
  of that operation: each is held ``blackhole_op_seconds`` (default 60), then its connection
  is dropped, and it never reaches the server; counted in ``outcomes["blackholed_op"]`` when
  it is taken (and per operation in ``outcomes["blackholed_op:<Operation>"]``). Other
  requests pass normally meanwhile.
- ``empty_receives``: every ReceiveMessage, the long polls already open included, is
  answered at once with no messages (``outcomes["emptied"]``). The benchmark sets it once a
  scenario's queue is drained and its consumer told to stop, so that a stop does not wait
  for the open 20 s long polls to end on an empty queue (what SQS would answer after 20 s).
  The server's side of an answered poll is left to end on its own: it can still take a
  message sent to that queue meanwhile, so use it on a drained queue only.

``ops`` in the counts is the number of requests per operation, including those faulted;
``open`` the requests per operation the proxy holds right now (a long poll whose client has
gone stays open until the server answers it, as it does at the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.reset()
        self.faults: dict[str, Any] = {}
        self.blackhole_until = 0.0
        self.op_latency: dict[str, float] = {}
        self.op_blackholes: Counter[str] = Counter()
        self.open: Counter[str] = Counter()  # not reset: requests still in flight
        self.emptied: asyncio.Future[None] | None = None  # done: answer receives empty at once

    def reset(self) -> None:
        self.ops: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.deleted = 0
        self.received = 0
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def counts(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "open": {op: n for op, n in self.open.items() if n},
            "outcomes": dict(self.outcomes),
            "total": sum(self.ops.values()),
            "deleted": self.deleted,
            "received": self.received,
            "first": self.first,
            "last": self.last,
        }

    async def control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action == "counts":
            return web.json_response(self.counts())
        if action == "reset":
            self.reset()
            return web.json_response({"ok": True})
        if action == "faults":
            self.faults = await request.json()
            seconds = float(self.faults.get("blackhole_seconds", 0) or 0)
            self.blackhole_until = time.monotonic() + seconds if seconds else 0.0
            self.op_latency = {str(op): float(v) for op, v in (self.faults.get("op_latency") or {}).items()}
            self.op_blackholes = Counter(
                {str(op): int(n) for op, n in (self.faults.get("blackhole_ops") or {}).items()}
            )
            if self.faults.get("empty_receives") and self.emptied is not None and not self.emptied.done():
                self.emptied.set_result(None)
            self.emptied = None
            return web.json_response({"ok": True})
        raise web.HTTPNotFound()

    @staticmethod
    def operation(request: web.Request, body: bytes) -> str:
        target = request.headers.get("X-Amz-Target", "")
        if target:
            return target.rsplit(".", 1)[-1]
        if b"Action=" in body:
            for part in body.split(b"&"):
                if part.startswith(b"Action="):
                    return part[7:].decode()
        return "other"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        op = self.operation(request, body)
        if op == "ReceiveMessage" and self.faults.get("empty_receives"):
            return self._emptied()
        self.open[op] += 1
        try:
            if op != "ReceiveMessage":
                return await self._handle(request, op, body)
            # A long poll ends with its answer, or empty when empty_receives is set meanwhile.
            if self.emptied is None:
                self.emptied = asyncio.get_running_loop().create_future()
            emptied = self.emptied
            forward = asyncio.ensure_future(self._handle(request, op, body))
            try:
                await asyncio.wait((forward, emptied), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                forward.cancel()
                raise
            if forward.done():
                return forward.result()
            forward.cancel()
            return self._emptied()
        finally:
            self.open[op] -= 1

    def _emptied(self) -> web.Response:
        self.outcomes["emptied"] += 1
        return web.json_response({}, content_type="application/x-amz-json-1.0")

    async def _handle(self, request: web.Request, op: str, body: bytes) -> web.StreamResponse:
        now = time.monotonic()
        self.ops[op] += 1
        self.first.setdefault(op, now)
        if self.blackhole_until and now < self.blackhole_until:
            # Hold the request until the outage ends, then drop the connection.
            await asyncio.sleep(self.blackhole_until - now)
            self.outcomes["blackholed"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        if self.op_blackholes[op] > 0:
            # This one request goes nowhere: held, then its connection dropped.
            self.op_blackholes[op] -= 1
            self.outcomes["blackholed_op"] += 1
            self.outcomes[f"blackholed_op:{op}"] += 1
            await asyncio.sleep(float(self.faults.get("blackhole_op_seconds", 60) or 0))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        latency = float(self.faults.get("latency", 0) or 0) + self.op_latency.get(op, 0.0)
        if latency:
            await asyncio.sleep(latency)
        if random.random() < float(self.faults.get("reset_rate", 0) or 0):
            self.outcomes["reset"] += 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if random.random() < float(self.faults.get("error_rate", 0) or 0):
            kind = self.faults.get("error", "throttle")
            if kind == "mixed":
                kind = random.choice(["throttle", "500"])
            self.outcomes[kind] += 1
            if kind == "throttle":
                return web.json_response(
                    {"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"},
                    status=400,
                    headers={"x-amzn-query-error": "ThrottlingException;Sender"},
                    content_type="application/x-amz-json-1.0",
                )
            return web.json_response(
                {"__type": "com.amazonaws.sqs#InternalError", "message": "injected"},
                status=500,
                content_type="application/x-amz-json-1.0",
            )
        injected: list[dict[str, Any]] = []
        entry_rate = float(self.faults.get("batch_entry_fail_rate", 0) or 0)
        if entry_rate and op == "DeleteMessageBatch":
            data = json.loads(body)
            keep = []
            for entry in data.get("Entries", []):
                if random.random() < entry_rate:
                    injected.append(
                        {
                            "Id": entry["Id"],
                            "SenderFault": False,
                            "Code": "InternalError",
                            "Message": "injected",
                        }
                    )
                else:
                    keep.append(entry)
            self.outcomes["entry_failures"] += len(injected)
            if not keep:
                return web.json_response(
                    {"Successful": [], "Failed": injected}, content_type="application/x-amz-json-1.0"
                )
            body = json.dumps({**data, "Entries": keep}).encode()
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self.session.request(
            request.method, self.upstream + request.rel_url.raw_path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        self.outcomes["ok" if status < 400 else str(status)] += 1
        self.last[op] = time.monotonic()
        if status == 200:
            self._count_messages(op, payload)
            if injected:
                merged = json.loads(payload)
                merged["Failed"] = [*merged.get("Failed", []), *injected]
                payload = json.dumps(merged).encode()
        return web.Response(body=payload, status=status, headers=out_headers)

    def _count_messages(self, op: str, payload: bytes) -> None:
        if op not in ("DeleteMessageBatch", "DeleteMessage", "ReceiveMessage"):
            return
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            return
        if op == "DeleteMessageBatch":
            self.deleted += len(data.get("Successful", []))
        elif op == "DeleteMessage":
            self.deleted += 1
        else:
            self.received += len(data.get("Messages", []))


async def serve(port: int, upstream: str, ready: asyncio.Event | None = None) -> None:
    proxy = Proxy(upstream)
    proxy.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/__proxy/{action}", proxy.control)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    if ready:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.session.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.upstream))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
