"""``IdempotencyRecord``: what an idempotent handler may take to complete its own record in
the same transaction as its effect.

The worker completes the record after the handler returns; a process killed in between
runs the handler again (``worker.runtime.idempotency``). An effect written to DynamoDB
closes that window: the handler puts ``record.completion(result)`` into the
``TransactWriteItems`` call that writes the effect, so the effect and the completed record
exist together or not at all::

    @router.handler("payment.requested", idempotent=True)
    async def charge(request: PaymentRequested, record: IdempotencyRecord, db: Ledger) -> None:
        await db.client.transact_write_items(
            TransactItems=[{"Put": {"TableName": "ledger", "Item": {...}}}, record.completion()]
        )
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    """The record's key: ``<queue>:<idempotency key>``."""
    owner: str
    """This run's token: the completion only takes while this run holds the record."""
    _completion: Callable[[Any], dict[str, Any]] | None = field(default=None, repr=False)

    def completion(self, result: Any = None) -> dict[str, Any]:
        """A ``TransactWriteItems`` item that marks the record completed (with ``result``,
        JSON-serialisable) on condition that this run still holds it. Needs the DynamoDB
        store (the same table's region and account as the transaction's other items)."""
        if self._completion is None:
            raise RuntimeError(
                "record.completion() needs idempotency.store: dynamodb (a transaction with the record's table)"
            )
        return self._completion(result)
