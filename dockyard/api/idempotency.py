"""``Idempotency-Key`` for POST: a retried request gets the first answer, not a duplicate.

The first request with a key claims it (an INSERT that wins or loses atomically), does
its work, and stores its response if it succeeded. A retry with the same key and the
same request replays that response; with a different request it is refused; while the
first is still running, the retry is told to wait. A request that failed, whatever the
failure (invalid, refused by the apiserver, the apiserver unreachable), releases its key,
so a retry with the same key runs again. Keys belong to their caller and expire after
``TTL``; each claim deletes a batch of expired keys, so the table holds about a day of
keys however many callers come and go.

A claim holds its key for ``IN_FLIGHT`` only until its response is stored: a request
lasts seconds (its body read and its apiserver call are bounded), so a claim still
unanswered after that belongs to a replica that died mid-request, and the key is free
again, rather than answering 409 "in progress" for a day. A retry then runs the request
again: if the dead replica's create did land, the apiserver answers that the object
exists (409 ``AlreadyExists``). Each claim completes or releases only itself (``Claim``,
by the time it was made): a request that outlived its window cannot overwrite or free
the claim of the retry that followed it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dockyard.api import errors

TTL = timedelta(hours=24)
IN_FLIGHT = timedelta(minutes=5)
MAX_KEY_LENGTH = 255

_CLAIM = """
INSERT INTO idempotency_keys (actor, key, method, path, request_hash, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + $6::interval)
ON CONFLICT (actor, key) DO NOTHING
RETURNING created_at
"""
_FETCH = """
SELECT method, path, request_hash, response_status, response_body
FROM idempotency_keys WHERE actor = $1 AND key = $2 AND expires_at > now()
"""
_PURGE_EXPIRED_ONE = (
    "DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2 AND expires_at <= now()"
)
# Expired keys of anyone, a bounded batch per claim (by the expiry index); rows another
# claim is purging are skipped, not waited for.
PURGE_BATCH = 500
_PURGE_EXPIRED_BATCH = """
DELETE FROM idempotency_keys WHERE (actor, key) IN (
    SELECT actor, key FROM idempotency_keys WHERE expires_at <= now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""
_COMPLETE = """
UPDATE idempotency_keys SET response_status = $4, response_body = $5,
    expires_at = now() + $6::interval
WHERE actor = $1 AND key = $2 AND created_at = $3
"""
_RELEASE = "DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2 AND created_at = $3"


@dataclass(frozen=True)
class Claim:
    """A key held by the request that claimed it, told from a later claim of the same
    key by when it was made."""

    actor: str
    key: str
    made_at: datetime


@dataclass(frozen=True)
class Replay:
    """The stored answer to a request already handled."""

    status: int
    body: Any


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise errors.validation_failed(
            [
                errors.FieldError(
                    field="Idempotency-Key",
                    message=f"must be 1 to {MAX_KEY_LENGTH} printable characters",
                )
            ]
        )
    return key


class IdempotencyStore:
    """Claims, completes and replays idempotency keys in the platform database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self, *, actor: str, key: str, method: str, path: str, digest: str
    ) -> Claim | Replay:
        """Claim ``key``: a Claim when this request should run, a Replay when it already
        ran."""
        async with self.pool.acquire() as conn:
            await conn.execute(_PURGE_EXPIRED_BATCH, PURGE_BATCH)
            await conn.execute(_PURGE_EXPIRED_ONE, actor, key)
            made_at = await conn.fetchval(_CLAIM, actor, key, method, path, digest, IN_FLIGHT)
            if made_at is not None:
                return Claim(actor, key, made_at)
            row = await conn.fetchrow(_FETCH, actor, key)
        if row is None:  # expired between the two statements: treat as fresh next time
            raise errors.conflict("The Idempotency-Key expired while retrying; retry again.")
        if row["request_hash"] != digest:
            raise errors.IDEMPOTENCY_KEY_REUSED(
                "This Idempotency-Key was used for a different request; use a new key.",
            )
        if row["response_status"] is None:
            raise errors.conflict("A request with this Idempotency-Key is still in progress.")
        return Replay(status=int(row["response_status"]), body=row["response_body"])

    async def complete(self, claim: Claim, *, status: int, body: Any) -> None:
        """Store the answer of the request holding ``claim``, kept for ``TTL``."""
        held = (claim.actor, claim.key, claim.made_at)
        await self.pool.execute(_COMPLETE, *held, status, body, TTL)

    async def release(self, claim: Claim) -> None:
        """Forget the claim of a request that failed, so a retry with the key runs again.

        Shielded: a request cancelled mid-way still releases its key.
        """
        held = (claim.actor, claim.key, claim.made_at)
        await asyncio.shield(self.pool.execute(_RELEASE, *held))
