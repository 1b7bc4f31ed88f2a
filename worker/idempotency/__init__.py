"""Records of the messages idempotent handlers ran: in progress (tied to the message's
lease) or completed (with the handler's result), shared by every replica.

``store`` has the record and the contract every store keeps, and the in-memory store;
``dynamodb`` the DynamoDB one. How a handler run uses them: ``worker.runtime.idempotency``.
"""

from worker.idempotency.store import COMPLETED, IN_PROGRESS, LEASE_SKEW, IdempotencyStore, MemoryStore, Record

__all__ = ["COMPLETED", "IN_PROGRESS", "LEASE_SKEW", "IdempotencyStore", "MemoryStore", "Record"]
