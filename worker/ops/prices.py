"""SQS's request prices, the defaults of ``worker stats``' cost columns (``request_cost``).

A module of its own, importing nothing: Typer reads ``worker stats``' option defaults when
it builds the ``worker`` app (``--help`` too), which must not import ``request_cost``'s
aiohttp and asyncio for three constants."""

PRICE_PER_MILLION = 0.40
"""US dollars per million requests to a standard queue (US East (N. Virginia), the first
100 billion requests a month; list price as of June 2026; other regions differ)."""
FIFO_PRICE_PER_MILLION = 0.50
"""The same for FIFO queues."""
PRICES_AS_OF = "June 2026"
