"""A BackupStore's key derived for a namespace belongs to that namespace, not to its name:
a namespace made again under the name (for another team, say) is given other keys, so
the earlier team's leftover artifacts under its storage prefix stay sealed.

``fill_from_store`` runs here as the operator runs it, against the test bed's apiserver
(no operator watches the namespace): it reads the namespace, writes the derived key's
Secret and fills the Backup.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.kube import KubeClient, KubeError, load_config
from dockyard.core.models.backup import Backup
from dockyard.operator.runs.stores import (
    derived_key,
    fill_from_store,
    find_store,
    store_keyring,
    store_keys,
)
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, remove_backup_store
from tests.integration.test_backup_stores import _filesystem_store

pytestmark = pytest.mark.usefixtures("crds_installed")


def _nightly(namespace: str, store: str, **status: str) -> dict[str, Any]:
    """A one-line Backup "nightly" in ``namespace``, to ``store``, with ``status``."""
    spec = {"environmentRef": {"name": "shop"}, "storeRef": {"name": store}}
    return {"apiVersion": "dockyard.io/v1alpha1", "kind": "Backup",
            "metadata": {"name": "nightly", "namespace": namespace}, "spec": spec,
            "status": status}  # fmt: skip


async def _filled_key(kubectl: Kubectl, state: State, namespace: str, store: str) -> bytes:
    """The key a one-line Backup in ``namespace`` is given by ``store``."""
    kubectl("apply", "-f", "-", input=json.dumps(_nightly(namespace, store)))
    read = kubectl("get", "backup", "nightly", "-n", namespace, "-o", "json").stdout
    kube = KubeClient.connect(load_config(Path(state.kubeconfig), {}))
    try:
        await fill_from_store(kube, Backup.model_validate(json.loads(read)))
    finally:
        await kube.close()
    secret = kubectl("get", "backup", "nightly", "-n", namespace,
                     "-o", "jsonpath={.spec.encryption.keySecretRef.name}").stdout  # fmt: skip
    data = kubectl("get", "secret", secret, "-n", namespace, "-o", "jsonpath={.data.key}").stdout
    return base64.b64decode(data)


async def test_a_namespace_made_again_under_its_name_is_given_other_keys(
    kubectl: Kubectl, testbed_state: State, backup_root: Path
) -> None:
    reused = f"t-keys-{uuid.uuid4().hex[:8]}"
    with _filesystem_store(kubectl, backup_root, "store-key") as store:
        kubectl("create", "namespace", reused)
        try:
            earlier = await _filled_key(kubectl, testbed_state, reused, store)
            again = await _filled_key(kubectl, testbed_state, reused, store)
            kubectl("delete", "namespace", reused, "--timeout=120s")
            kubectl("create", "namespace", reused)

            later = await _filled_key(kubectl, testbed_state, reused, store)
        finally:
            kubectl("delete", "namespace", reused, "--wait=false", check=False)
    assert again == earlier  # one namespace keeps its key: its artifacts stay readable
    assert len(later) == 32
    assert later != earlier


async def _offered(
    state: State, namespace: str, store: str, *, older: bool
) -> tuple[set[str], str]:
    """The key ids a restore of a Backup from ``store`` in ``namespace`` is offered, and
    the id of the key derived from the namespace's name alone; with ``older``, the Backup
    records that key (``status.keyId``), as one completed before the uid counted does."""
    kube = KubeClient.connect(load_config(Path(state.kubeconfig), {}))
    try:
        [root] = await store_keys(kube, await find_store(kube, store))
        legacy = derived_key(root, namespace, None).key_id
        recorded = {"keyId": legacy} if older else {}
        offered = await store_keyring(
            kube, Backup.model_validate(_nightly(namespace, store, **recorded))
        )
    finally:
        await kube.close()
    return {key.key_id for key in offered}, legacy


async def test_a_key_derived_from_the_name_alone_is_offered_only_to_a_backup_that_used_it(
    kubectl: Kubectl, testbed_state: State, backup_root: Path
) -> None:
    reused = f"t-keys-{uuid.uuid4().hex[:8]}"
    with _filesystem_store(kubectl, backup_root, "store-key") as store:
        kubectl("create", "namespace", reused)
        try:
            earlier, legacy = await _offered(testbed_state, reused, store, older=True)
            kubectl("delete", "namespace", reused, "--timeout=120s")
            kubectl("create", "namespace", reused)

            later, _ = await _offered(testbed_state, reused, store, older=False)
        finally:
            kubectl("delete", "namespace", reused, "--wait=false", check=False)
    assert legacy in earlier  # a Backup made before the uid counted stays restorable
    assert len(earlier) == 2
    assert later.isdisjoint(earlier)  # only the new namespace's own key
    assert len(later) == 1


async def test_a_backup_made_again_under_its_name_is_not_filled_for_the_earlier_one(
    kubectl: Kubectl, testbed_state: State, backup_root: Path, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    with _filesystem_store(kubectl, backup_root, "store-key") as store:
        kubectl("create", "-f", "-", input=json.dumps(_nightly(namespace, store)))
        read = kubectl("get", "backup", "nightly", "-n", namespace, "-o", "json").stdout
        earlier = Backup.model_validate(json.loads(read))
        kubectl("delete", "backup", "nightly", "-n", namespace)
        kubectl("create", "-f", "-", input=json.dumps(_nightly(namespace, store)))

        kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
        try:
            assert await fill_from_store(kube, earlier) is None
        finally:
            await kube.close()
        storage = kubectl("get", "backup", "nightly", "-n", namespace,
                          "-o", "jsonpath={.spec.storage}").stdout  # fmt: skip
    assert storage == ""  # the Backup made again is filled by its own pass, if any


async def test_a_store_read_the_apiserver_refuses_is_an_error_not_a_store_without_keys(
    kubectl: Kubectl, testbed_state: State, backup_root: Path, tmp_path: Path
) -> None:
    # "No keys" would make a restore whose own key Secret is gone fail as KeysGone, which
    # a drill holds against the backup; an apiserver that refused a read says nothing of it.
    namespace = f"t-keys-{uuid.uuid4().hex[:8]}"
    with _filesystem_store(kubectl, backup_root, "store-key") as store:
        kubectl("create", "namespace", namespace)
        try:
            kubectl("create", "serviceaccount", "nobody", "-n", namespace)
            token = kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
            config = load_config(Path(testbed_state.kubeconfig), {})
            backup = Backup.model_validate(_nightly(namespace, store))
            # Without the admin's client certificate, which the apiserver would take first.
            assert config.caller_ssl_context is not None
            bare = dataclasses.replace(config, token=token, ssl_context=config.caller_ssl_context)
            refused = KubeClient.connect(bare)
            try:
                with pytest.raises(KubeError) as raised:
                    await store_keyring(refused, backup)
            finally:
                await refused.close()
            assert raised.value.status == 403

            # A store that is gone is an answer: it offers no keys.
            remove_backup_store(kubectl, store)
            kube = KubeClient.connect(config)
            try:
                assert await store_keyring(kube, backup) == []
            finally:
                await kube.close()
        finally:
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)
