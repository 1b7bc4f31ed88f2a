"""What a queue's SQS requests cost, from the workers' own counts: their ``/metrics``.

A worker counts every SQS request it makes for a queue
(``sqs_worker_queue_requests_total{queue, operation}``: receives, delete and visibility
batches, its DLQ moves, its start-up lookups; each attempt) and the messages it received
(``sqs_worker_messages_received_total``). ``worker stats --metrics-url`` reads one or more
workers' endpoints and sums them: requests per message since each worker started, and
requests per second (between two reads, or since each worker started) priced per month.

SQS bills per request: a batch of up to ten messages is one request, an empty receive is
one, and each 64 KiB chunk of a request's payload counts as one more. The worker counts
API calls, so for payloads above 64 KiB the estimate is low; it also leaves out the free
tier (the first million requests a month, per account) and the cheaper tiers above 100
billion requests a month.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from worker.errors import EXIT_UNREACHABLE, ConfigError, WorkerError
from worker.observe.metrics import NS
from worker.ops.prices import FIFO_PRICE_PER_MILLION as FIFO_PRICE_PER_MILLION  # (re-exported)
from worker.ops.prices import PRICE_PER_MILLION as PRICE_PER_MILLION
from worker.ops.prices import PRICES_AS_OF as PRICES_AS_OF

SECONDS_PER_MONTH = 30 * 86_400
"""A month of 30 days."""

REQUESTS = f"{NS}_queue_requests_total"
RECEIVED = f"{NS}_messages_received_total"
STARTED = "process_start_time_seconds"


class MetricsUnreachable(WorkerError):
    """A worker's metrics endpoint did not answer, or not with a worker's metrics."""

    exit_code = EXIT_UNREACHABLE


def monthly_cost(requests_per_second: float, price_per_million: float) -> float:
    """US dollars a month (30 days) at ``requests_per_second``."""
    return requests_per_second * SECONDS_PER_MONTH * price_per_million / 1e6


def metrics_url(value: str) -> str:
    """``value`` as a URL to read: http(s) only; no path means ``/metrics``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--metrics-url {value!r}: expected http(s)://host:port[/metrics]")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urlunsplit(parts)


@dataclass(frozen=True)
class Scrape:
    """One read of one worker's metrics."""

    url: str
    at: float
    """When it was read (seconds since the epoch, like ``started``)."""
    started: float | None
    """The worker's ``process_start_time_seconds`` (None where the platform has none)."""
    requests: dict[str, float]
    """SQS requests per queue label (the queue's key in the worker configuration), all operations."""
    received: dict[str, float]
    """Messages received per queue label, all types."""


def parse_scrape(url: str, text: str, at: float) -> Scrape:
    """The counts of a worker's Prometheus text exposition (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[str, float] = defaultdict(float)
    received: dict[str, float] = defaultdict(float)
    started: float | None = None
    worker = False
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == REQUESTS:
                    requests[sample.labels["queue"]] += sample.value
                elif sample.name == RECEIVED:
                    received[sample.labels["queue"]] += sample.value
                elif sample.name == STARTED:
                    started = sample.value
                worker = worker or sample.name.startswith(f"{NS}_")
    except (ValueError, KeyError, IndexError) as exc:
        raise MetricsUnreachable(f"{url} did not answer with Prometheus metrics: {exc}") from None
    if not worker:
        raise MetricsUnreachable(f"{url} answered without any {NS}_* metric: not a worker's /metrics")
    return Scrape(url, at, started, dict(requests), dict(received))


async def read_scrape(session: aiohttp.ClientSession, url: str, limit: float) -> Scrape:
    """One read of ``url``, given up after ``limit`` seconds."""
    try:
        async with asyncio.timeout(limit), session.get(url) as response:
            text = await response.text()
            status = response.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        raise MetricsUnreachable(f"cannot read worker metrics at {url} within {limit:g}s: {detail}") from None
    if status != 200:
        raise MetricsUnreachable(f"worker metrics at {url}: HTTP {status}")
    return parse_scrape(url, text, time.time())


def request_rates(before: Scrape | None, now: Scrape) -> dict[str, float]:
    """One worker's SQS requests per second per queue: between ``before`` and ``now`` (a
    worker that restarted in between counts from its start), or with no ``before`` since
    the worker started. Empty when there is no time to divide by."""
    if before is None:
        elapsed = None if now.started is None else now.at - now.started
        previous: dict[str, float] = {}
    else:
        restarted = before.started != now.started
        # A worker that restarted between the reads: its counts are since its start.
        since = max(before.at, now.started) if restarted and now.started is not None else before.at
        elapsed = now.at - since
        previous = {} if restarted else before.requests
    if not elapsed or elapsed <= 0:
        return {}
    rates: dict[str, float] = {}
    for queue, count in now.requests.items():
        last = previous.get(queue, 0.0)
        rates[queue] = (count - last if count >= last else count) / elapsed  # less: a counter reset
    return rates


@dataclass(frozen=True)
class QueueCost:
    """A queue's requests as the workers counted them, summed over the workers read."""

    requests: float
    """SQS requests since each worker started."""
    received: float
    """Messages received since each worker started."""
    requests_per_message: float | None
    """``requests / received``; None before the first message."""
    requests_per_second: float | None
    """The current rate (see ``Rates``); None where it could not be taken."""
    monthly_cost: float | None
    """US dollars a month (30 days) at ``requests_per_second`` and ``price_per_million``."""
    price_per_million: float


@dataclass(frozen=True)
class Rates:
    """How the rate of one report was taken."""

    basis: str
    """``interval``: between two reads of every worker; ``since_start``: each worker's
    counts divided by its uptime."""
    seconds: float | None
    """The interval (the longest of the workers'); None since start."""


def queue_costs(
    before: dict[str, Scrape] | None,
    now: dict[str, Scrape],
    price_of: Callable[[str], float],
) -> tuple[dict[str, QueueCost], Rates]:
    """Per queue label the workers report: counts, requests per message and monthly cost,
    summed over the workers (``now``, by URL). ``before``: the previous read of the same
    URLs (rates between the two), or None (rates since each worker started). ``price_of``:
    US dollars per million requests of a queue label."""
    requests: dict[str, float] = defaultdict(float)
    received: dict[str, float] = defaultdict(float)
    rates: dict[str, float] = defaultdict(float)
    measured: set[str] = set()
    windows: list[float] = []
    for url, scrape in now.items():
        previous = None if before is None else before.get(url)
        for queue, count in scrape.requests.items():
            requests[queue] += count
            received[queue] += scrape.received.get(queue, 0.0)
        worker_rates = request_rates(previous, scrape)
        for queue, rate in worker_rates.items():
            rates[queue] += rate
            measured.add(queue)
        if previous is not None:
            windows.append(scrape.at - previous.at)
    costs: dict[str, QueueCost] = {}
    for queue, count in requests.items():
        price = price_of(queue)
        per_second = rates[queue] if queue in measured else None
        costs[queue] = QueueCost(
            requests=count,
            received=received[queue],
            requests_per_message=count / received[queue] if received[queue] else None,
            requests_per_second=per_second,
            monthly_cost=None if per_second is None else monthly_cost(per_second, price),
            price_per_million=price,
        )
    how = Rates("since_start", None) if before is None else Rates("interval", max(windows, default=None))
    return costs, how


class CostMeter:
    """Reads every worker's metrics; remembers the last read for the next rate."""

    def __init__(self, urls: list[str], timeout: float) -> None:
        self.urls = list(dict.fromkeys(urls))  # the same worker once
        self.timeout = timeout
        self.last: dict[str, Scrape] | None = None

    async def read(self, session: aiohttp.ClientSession) -> dict[str, Scrape]:
        scrapes = await asyncio.gather(*(read_scrape(session, url, self.timeout) for url in self.urls))
        return dict(zip(self.urls, scrapes, strict=True))

    async def start(self, session: aiohttp.ClientSession) -> None:
        """The first read, that the next report's rate starts from."""
        self.last = await self.read(session)

    async def report(
        self, session: aiohttp.ClientSession, price_of: Callable[[str], float]
    ) -> tuple[dict[str, QueueCost], Rates]:
        """Counts and costs now; the rate since the last read (``start`` or the previous
        report), or since each worker started when there was none."""
        now = await self.read(session)
        result = queue_costs(self.last, now, price_of)
        self.last = now
        return result
