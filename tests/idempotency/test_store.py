"""The contract every idempotency store keeps, for the in-memory store and for DynamoDB
over HTTP (moto's server): claims, takeovers, owner-conditional writes, expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import idempotency_table
from worker.idempotency import COMPLETED, IN_PROGRESS, IdempotencyStore, MemoryStore, Record
from worker.idempotency.dynamodb import DynamoDBStore
from worker.settings import AwsSettings


@pytest.fixture(params=["memory", "dynamodb"])
async def store(request: pytest.FixtureRequest, moto_endpoint: str) -> AsyncIterator[IdempotencyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    aws = AwsSettings(endpoint_url=moto_endpoint, region="us-east-1")
    async with idempotency_table(moto_endpoint) as table, DynamoDBStore.connect(aws, table) as dynamodb:
        yield dynamodb


def record(owner: str, *, message: str = "m1", count: int = 1, lease: float = 60, **kw: Any) -> Record:
    now = time.time()
    fields: dict[str, Any] = {
        "key": "q:k1",
        "status": IN_PROGRESS,
        "owner": owner,
        "message_id": message,
        "receive_count": count,
        "lease_expires": now + lease,
        "expires": now + 3600,
    }
    fields.update(kw)
    return Record(**fields)


async def test_one_claim_holds_the_key_until_completed_then_replays(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a"), now) is None
    holder = await store.claim(record("b", message="m2"), now)
    assert holder is not None
    assert holder.status == IN_PROGRESS
    assert holder.owner == "a"
    assert holder.message_id == "m1"
    assert not await store.complete("q:k1", "b", None, now + 3600)  # not b's
    assert await store.complete("q:k1", "a", '{"invoice": 7}', now + 3600)
    done = await store.claim(record("c", message="m3"), now)
    assert done is not None
    assert done.status == COMPLETED
    assert done.result == '{"invoice": 7}'


async def test_a_released_key_can_be_claimed_again_but_only_its_owner_releases(
    store: IdempotencyStore,
) -> None:
    now = time.time()
    assert await store.claim(record("a"), now) is None
    await store.release("q:k1", "someone-else")
    assert await store.claim(record("b", message="m2"), now) is not None  # still a's
    await store.release("q:k1", "a")
    assert await store.claim(record("b", message="m2"), now) is None


async def test_a_completed_record_is_not_released_nor_overwritten(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a"), now) is None
    assert await store.complete("q:k1", "a", '{"first": 1}', now + 3600)
    # Completed again by its owner (after the handler's own transaction did): kept as is.
    assert await store.complete("q:k1", "a", None, now + 7200)
    await store.release("q:k1", "a")  # the handler raised after its transaction committed
    held = await store.claim(record("b", message="m2"), now)
    assert held is not None
    assert held.status == COMPLETED
    assert held.result == '{"first": 1}'


async def test_an_in_progress_record_past_its_lease_is_taken_over(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a", lease=5), now) is None
    assert await store.claim(record("b", message="m2"), now + 4) is not None  # lease lives
    assert await store.claim(record("b", message="m2"), now + 6) is None  # lease ran out
    assert not await store.complete("q:k1", "a", None, now + 3600)  # a lost it
    assert not await store.extend("q:k1", "a", now + 100)


async def test_the_same_message_delivered_again_takes_over_once_its_lease_ran_out(
    store: IdempotencyStore,
) -> None:
    now = time.time()
    assert await store.claim(record("a", count=1, lease=0.5), now) is None
    # The same delivery (same receive count) does not take over; the next delivery does
    # once the lease (without the clock skew) ran out: SQS delivers a message again when
    # its visibility ran out.
    assert await store.claim(record("b", count=1), now) is not None
    assert await store.claim(record("c", count=2), now) is None
    # A standard queue's rare duplicate delivered while the lease lives: held off.
    assert await store.claim(record("x", key="q:k2", count=1, lease=600), now) is None
    assert await store.claim(record("y", key="q:k2", count=2), now) is not None
    # A completed record holds against every delivery.
    assert await store.complete("q:k1", "c", None, now + 3600)
    held = await store.claim(record("d", count=3), now)
    assert held is not None
    assert held.status == COMPLETED


async def test_extend_moves_the_lease_for_its_owner_only(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a", lease=5), now) is None
    assert await store.extend("q:k1", "a", now + 50)
    assert not await store.extend("q:k1", "b", now + 500)
    assert await store.claim(record("b", message="m2"), now + 20) is not None  # extended
    assert await store.claim(record("b", message="m2"), now + 51) is None


async def test_an_expired_completed_record_no_longer_holds(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a"), now) is None
    assert await store.complete("q:k1", "a", None, now + 10)
    assert await store.claim(record("b", message="m2"), now + 5) is not None
    assert await store.claim(record("b", message="m2"), now + 11) is None


async def test_keys_are_independent(store: IdempotencyStore) -> None:
    now = time.time()
    assert await store.claim(record("a"), now) is None
    assert await store.claim(record("b", key="other:k1"), now) is None
