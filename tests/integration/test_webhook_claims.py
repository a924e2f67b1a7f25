"""How ``webhook_deliveries.claim`` shares a batch among namespaces, on the test bed's
platform database: a namespace's old backlog takes only its share, the platform
namespace's Webhooks (which receive every namespace's events) take up to half, and
what one namespace leaves goes to the others.

The namespaces are made up for the test and have no Webhook, so the session's operator
(which claims only for namespaces it has Webhooks in) never takes these rows.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dockyard.core import webhook_deliveries as store

pytestmark = pytest.mark.usefixtures("platform_migrated")

# Events and one due delivery each: ``count`` of them in ``namespace``, ``age`` overdue.
_LOAD = """
WITH made AS (
    INSERT INTO events (id, type, resource, namespace, name, body)
    SELECT 'evt_' || md5($1 || g::text), 'backup.completed', 'backups', $1, 'b' || g, '{}'
    FROM generate_series(1, $2::int) AS g
    RETURNING seq, id, namespace
)
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id, next_at)
SELECT 'uid-' || namespace, namespace, 'hook', seq, id,
       now() - make_interval(secs => $3) + seq * interval '1 millisecond'
FROM made
"""


@pytest.fixture
def pool(platform_pool: asyncpg.Pool) -> asyncpg.Pool:
    return platform_pool


@pytest.fixture
def names() -> dict[str, str]:
    run = uuid.uuid4().hex[:6]
    return {key: f"{key}-{run}" for key in ("platform", "noisy", "a", "b", "c")}


@pytest.fixture
async def loaded(pool: asyncpg.Pool, names: dict[str, str]) -> AsyncIterator[None]:
    async def load(namespace: str, count: int, age: float) -> None:
        await pool.execute(_LOAD, namespace, count, age)

    await load(names["platform"], 100, 7200)
    await load(names["noisy"], 300, 3600)  # the oldest tenant backlog
    for key in ("a", "b", "c"):
        await load(names[key], 10, 60)
    yield
    every = list(names.values())
    await pool.execute("DELETE FROM webhook_deliveries WHERE namespace = any($1)", every)
    await pool.execute("DELETE FROM events WHERE namespace = any($1)", every)


async def _claim(pool: asyncpg.Pool, names: dict[str, str], *keys: str, **kw: str) -> Counter[str]:
    by_uid = {f"uid-{names[k]}": k for k in keys}
    claimed = await store.claim(pool, [names[k] for k in keys], 50, 60.0, **kw)
    return Counter(by_uid[c.webhook_uid] for c in claimed)


@pytest.mark.usefixtures("loaded")
async def test_an_old_backlog_takes_only_its_share_and_leaves_the_rest_to_others(
    pool: asyncpg.Pool, names: dict[str, str]
) -> None:
    taken = await _claim(pool, names, "noisy", "a", "b", "c")
    # 50 among four: 12 each, but a, b and c have 10 due each; the 8 they leave go to
    # the backlog in a second round. Oldest first, the backlog would have taken all 50.
    assert taken == Counter({"noisy": 20, "a": 10, "b": 10, "c": 10})
    # Nothing else is due now (what was claimed is leased): the backlog takes it all.
    assert await _claim(pool, names, "noisy", "a", "b", "c") == Counter({"noisy": 50})


@pytest.mark.usefixtures("loaded")
async def test_the_platform_namespaces_webhooks_take_up_to_half_the_batch(
    pool: asyncpg.Pool, names: dict[str, str]
) -> None:
    """Its Webhooks receive every namespace's events: as one namespace among many they
    would get 1/(n+1) of each batch and fall behind."""
    taken = await _claim(
        pool, names, "platform", "noisy", "a", "b", "c", everywhere=names["platform"]
    )
    # Half to the platform namespace, the other 25 shared by four (6 each, the one left
    # to the longest waiting); as one namespace among five it would have had 10.
    assert taken == Counter({"platform": 25, "noisy": 7, "a": 6, "b": 6, "c": 6})
