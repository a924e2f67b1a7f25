"""The operator's life cycle without Kopf or a cluster: a replica that lost the lead is
gone before a standby may act, and a start-up that fails leaves nothing running."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dockyard.core.settings import Settings
from dockyard.operator import main
from dockyard.operator.leadership import Leadership
from dockyard.operator.services import OperatorMemo


class _Exits:
    """``os._exit`` recorded instead of done: its code and when (monotonic)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []
        self.done = threading.Event()

    def __call__(self, code: int) -> None:
        self.calls.append((code, time.monotonic()))
        self.done.set()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> _Exits:
    recorded = _Exits()
    monkeypatch.setattr(os, "_exit", recorded)
    return recorded


def test_the_exit_margin_is_what_is_left_before_a_standby_may_take_over() -> None:
    lease = Leadership.__new__(Leadership)  # only its timings are read
    lease.duration, lease.renew_deadline, lease.retry = 15.0, 10.0, 2.0  # the defaults
    # The loss is seen at most 12 s after the last renewal; a standby acts 15 s after it.
    assert main.exit_margin(lease) == 2.0
    lease.duration, lease.renew_deadline, lease.retry = 0.6, 0.4, 0.05
    assert main.exit_margin(lease) == 0.0


async def test_a_lost_lead_ends_the_process_after_the_margin_even_with_the_loop_blocked(
    exits: _Exits,
) -> None:
    lost = asyncio.Event()
    waiting = asyncio.create_task(main.exit_when_lost(lost, 0.2))
    await asyncio.sleep(0.1)
    assert not exits.calls  # nothing while this replica leads

    lost.set()
    timer = await asyncio.wait_for(waiting, timeout=1)
    set_at = time.monotonic()
    try:
        time.sleep(0.5)  # noqa: ASYNC251 - a handler blocking the loop: the timer is a thread
        assert [code for code, _ in exits.calls] == [1]
        assert 0.15 <= exits.calls[0][1] - set_at < 0.45
    finally:
        timer.cancel()


class _Lease:
    """A replica's side of the election that leads at once and loses the lead when
    told; timed so that the margin is 0.3 s."""

    def __init__(self) -> None:
        self.duration, self.renew_deadline, self.retry = 2.0, 0.5, 0.2
        self.lose = asyncio.Event()

    async def acquire(self) -> None:
        return None

    async def hold(self, lost: asyncio.Event) -> None:
        await self.lose.wait()
        lost.set()

    async def release(self) -> None:
        return None


class _Kube:
    async def close(self) -> None:
        return None


async def test_a_leader_whose_kopf_keeps_running_after_losing_the_lead_is_ended(
    exits: _Exits, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = _Lease()
    lost_at: list[float] = []

    async def operator(*, stop_flag: asyncio.Event, **_: Any) -> None:
        """Kopf asked to stop, its workers and spawned tasks still writing."""
        await stop_flag.wait()
        lost_at.append(time.monotonic())
        await asyncio.to_thread(exits.done.wait, 5)

    monkeypatch.setattr(main.kopf, "operator", operator)
    monkeypatch.setattr(main, "load_config", lambda *_: None)
    monkeypatch.setattr(main.KubeClient, "connect", lambda *_, **__: _Kube())
    monkeypatch.setattr(main.Leadership, "of", lambda *_: lease)
    settings = Settings(operator_leader_election=True, operator_metrics_port=None)
    memo = OperatorMemo(settings=settings, namespaces=())
    operating = asyncio.create_task(main._operate(settings, [], memo))
    await asyncio.sleep(0.1)
    lease.lose.set()

    assert await asyncio.wait_for(operating, timeout=5) == 1
    assert [code for code, _ in exits.calls] == [1]
    assert 0.25 <= exits.calls[0][1] - lost_at[0] < 0.6


def _kubeconfig(tmp_path: Path) -> Path:
    # Nothing listens on port 1: every call of the operator's is refused at once.
    path = tmp_path / "config"
    path.write_text(
        """
apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
"""
    )
    return path


def _leaked() -> list[str]:
    names = {"webhook-dispatcher", "event-retention", "scaling-policy-refresh"}
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name() in names)


async def test_a_start_up_that_fails_late_leaves_no_dispatcher_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def default_store(*_: Any) -> None:
        raise aiohttp.ClientConnectionError("apiserver not answering yet")

    monkeypatch.setattr(main, "_default_store", default_store)
    settings = Settings(
        kubeconfig=_kubeconfig(tmp_path),
        default_backup_store=True,
        operator_metrics_port=None,
        database_url="postgresql://dockyard@127.0.0.1:1/dockyard",
    )
    memo = OperatorMemo(settings=settings, namespaces=())
    before = _leaked()

    for _ in range(2):  # Kopf tries a failed start-up again
        with pytest.raises(aiohttp.ClientConnectionError):
            await main.connect(memo=memo)

    assert _leaked() == before
    assert memo.started() is None


async def test_an_apiserver_not_answering_yet_fails_no_start_up_over_the_default_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dockyard.operator.runs import stores

    async def ensure_default_store(*_: Any) -> str:
        raise aiohttp.ClientConnectionError("apiserver not answering yet")

    monkeypatch.setattr(stores, "ensure_default_store", ensure_default_store)

    await main._default_store(None, Settings())  # type: ignore[arg-type]
