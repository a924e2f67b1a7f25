"""A status written for one object reaches that object, or none: ``KindStore.write_status``
with a uid, against the test bed's real apiserver, in a namespace no operator watches.

The status subresource drops ``metadata.uid`` from a merge patch, so the write reads the
object and sends the resourceVersion it read as a precondition:

- an object deleted and made again under the name, even between that read and the
  write, keeps its own status;
- another write landing in between is no reason to give up: the status is written.

A merge patch of the object itself (``KindStore.patch``) carries the uid, which the
apiserver refuses to change: the object made again under the name is left as it is.

The API's rate-limit status reporter writes from its watch cache; a cache still holding
the object of before is bound to it by the resourceVersion it holds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dockyard.api.ratelimit.rules import PolicyIndex
from dockyard.api.ratelimit.status import (
    MemoryTally,
    SoleReplica,
    StatusReporter,
    ThrottleLedger,
)
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.models.backup import Backup
from dockyard.core.resources import Manifest
from dockyard.operator import apply
from dockyard.operator.store import KindStore
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl
from tests.integration.ratelimits import manifest, rule

pytestmark = pytest.mark.usefixtures("crds_installed")

STATUS = {"phase": "Failed", "message": "written for the first nightly"}


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    """No operator of the session writes to what these tests make there."""
    return unwatched_namespace


@pytest.fixture
async def backups(testbed_state: State) -> AsyncIterator[KindStore[Backup]]:
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    yield KindStore(kube, Backup)
    await kube.close()


def _made(kubectl: Kubectl, namespace: str) -> str:
    """A Backup "nightly" made in ``namespace``; its uid."""
    manifest = {"apiVersion": "dockyard.io/v1alpha1", "kind": "Backup",
                "metadata": {"name": "nightly", "namespace": namespace},
                "spec": {"environmentRef": {"name": "shop"}}}  # fmt: skip
    made = kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    return str(json.loads(made)["metadata"]["uid"])


def _written(kubectl: Kubectl, namespace: str) -> bool:
    """Whether the Backup "nightly" holds ``STATUS`` (beside its schema's defaults)."""
    read = kubectl("get", "backup", "nightly", "-n", namespace, "-o", "json").stdout
    status = json.loads(read).get("status") or {}
    return {key: status.get(key) for key in STATUS} == STATUS


def _after_first_read(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]) -> list[str]:
    """Run ``meanwhile`` once, right after the write's first read; the uids it read."""
    real: Callable[[KubeClient, str], Awaitable[Manifest | None]] = apply.get
    read: list[str] = []

    async def get(kube: KubeClient, path: str) -> Manifest | None:
        found = await real(kube, path)
        read.append(str(((found or {}).get("metadata") or {}).get("uid")))
        if len(read) == 1:
            meanwhile()
        return found

    monkeypatch.setattr(apply, "get", get)
    return read


async def test_a_status_reaches_the_object_it_is_for(
    kubectl: Kubectl, namespace: str, backups: KindStore[Backup]
) -> None:
    uid = _made(kubectl, namespace)

    assert await backups.write_status(namespace, "nightly", STATUS, uid=uid)

    assert _written(kubectl, namespace)


async def test_an_object_made_again_under_the_name_keeps_its_own_status(
    kubectl: Kubectl, namespace: str, backups: KindStore[Backup]
) -> None:
    first = _made(kubectl, namespace)
    kubectl("delete", "backup", "nightly", "-n", namespace)
    again = _made(kubectl, namespace)

    assert not await backups.write_status(namespace, "nightly", STATUS, uid=first)

    assert again != first
    assert not _written(kubectl, namespace)


async def test_an_object_made_again_between_the_read_and_the_write_keeps_its_own_status(
    kubectl: Kubectl,
    namespace: str,
    backups: KindStore[Backup],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _made(kubectl, namespace)
    made_again: list[str] = []

    def replace() -> None:
        kubectl("delete", "backup", "nightly", "-n", namespace)
        made_again.append(_made(kubectl, namespace))

    read = _after_first_read(monkeypatch, replace)

    assert not await backups.write_status(namespace, "nightly", STATUS, uid=first)

    assert read == [first, made_again[0]]  # the write was refused, and read again
    assert not _written(kubectl, namespace)


async def test_another_write_in_between_is_read_again_and_the_status_written(
    kubectl: Kubectl,
    namespace: str,
    backups: KindStore[Backup],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = _made(kubectl, namespace)

    def label() -> None:
        kubectl("label", "backup", "nightly", "-n", namespace, "touched=yes")

    read = _after_first_read(monkeypatch, label)

    assert await backups.write_status(namespace, "nightly", STATUS, uid=uid)

    assert read == [uid, uid]
    assert _written(kubectl, namespace)
    labels = kubectl("get", "backup", "nightly", "-n", namespace,
                     "-o", "jsonpath={.metadata.labels.touched}").stdout  # fmt: skip
    assert labels == "yes"


async def test_a_patch_reaches_the_object_it_is_for_and_no_other_of_the_name(
    kubectl: Kubectl, namespace: str, backups: KindStore[Backup]
) -> None:
    first = _made(kubectl, namespace)
    marked = {"metadata": {"annotations": {"dockyard.io/test-mark": "first"}}}
    mark = ["get", "backup", "nightly", "-n", namespace, "-o",
            r"jsonpath={.metadata.annotations.dockyard\.io/test-mark}"]  # fmt: skip

    assert await backups.patch(namespace, "nightly", marked, uid=first)
    assert kubectl(*mark).stdout == "first"

    kubectl("delete", "backup", "nightly", "-n", namespace)
    _made(kubectl, namespace)

    assert not await backups.patch(namespace, "nightly", marked, uid=first)
    assert kubectl(*mark).stdout == ""


class _StaleCache:
    """A watch cache that has not yet seen the policy deleted and made again: the
    one object it holds, as it was read."""

    def __init__(self, obj: Manifest) -> None:
        self.obj = obj

    def get(self, namespace: str, name: str) -> Manifest | None:
        meta = self.obj["metadata"]
        return self.obj if (meta["namespace"], meta["name"]) == (namespace, name) else None


async def test_a_rate_limit_status_from_a_stale_cache_never_reaches_the_policy_made_again(
    kubectl: Kubectl, namespace: str, backups: KindStore[Backup]
) -> None:
    two = manifest(namespace, "limits", rule("a", 5), rule("b", 5))
    kubectl("create", "-f", "-", input=json.dumps(two))
    earlier = json.loads(kubectl("get", "rlp", "limits", "-n", namespace, "-o", "json").stdout)
    kubectl("delete", "rlp", "limits", "-n", namespace)
    kubectl("create", "-f", "-", input=json.dumps(manifest(namespace, "limits", rule("c", 5))))
    index = PolicyIndex(platform_namespace="dockyard-system")
    index.rebuild([earlier])
    reporter = StatusReporter(
        kube=backups.kube,
        cache=_StaleCache(earlier),  # type: ignore[arg-type]
        index=index,
        ledger=ThrottleLedger(),
        tally=MemoryTally(),
        lease=SoleReplica(),
        interval=60,
    )

    assert await reporter.report() == 0

    # Another API of the session may report on the new policy: its one rule, never two.
    status = json.loads(kubectl("get", "rlp", "limits", "-n", namespace, "-o", "json").stdout)
    assert (status.get("status") or {}).get("rules") != 2


async def test_a_delete_decided_on_an_old_read_leaves_an_object_changed_since(
    kubectl: Kubectl, namespace: str, backups: KindStore[Backup]
) -> None:
    uid = _made(kubectl, namespace)
    [read] = await backups.in_namespace(namespace)
    # Changed after the read (a drill's verdict, say).
    assert await backups.write_status(namespace, "nightly", STATUS, uid=uid)
    old = read.metadata.resource_version

    assert not await backups.delete(namespace, "nightly", uid=uid, resource_version=old)
    assert _written(kubectl, namespace)  # still there

    [fresh] = await backups.in_namespace(namespace)
    assert await backups.delete(
        namespace, "nightly", uid=uid, resource_version=fresh.metadata.resource_version
    )
