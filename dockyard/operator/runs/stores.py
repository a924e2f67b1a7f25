"""BackupStores: a Backup that names no storage or key gets its store's, and its keys.

A Backup (or a schedule's Backup) without ``storage`` or ``encryption`` is filled in
before its first attempt (:func:`fill_from_store`): the store its ``storeRef`` names,
else the one marked default, gives its storage, and its current key, *derived for the
Backup's namespace*, gives the key. The derived key is written into a Secret of that
namespace, ``<store>-<key id>``, which the Backup's ``encryption`` then names, so
every later step (an inline run, a runner Job, a restore, a drill) reads the key as it
reads any Backup's, and the spec says where the artifact went.

Derivation (HKDF-SHA256 of the store's key, with the namespace's name and uid as
context) keeps the store's keys in its ``secretNamespace``: a tenant who reads its own
Secrets holds the keys of its own artifacts only, not those of an earlier namespace of
the same name (whose leftovers its storage prefix may still hold). A key derived before
the uid was part of the context (from the name alone) is still offered to a restore,
but only the one whose id the restored Backup's status records (``keyId``, written by
the operator when that Backup completed, not by tenants): so a Backup made then stays
restorable, and a namespace made again under the name, whose Backups all record keys
derived for its own uid, is offered none of the earlier namespace's keys.

A rotation (a new current key, the old one moved to ``previousKeySecretRefs``) gives new
Backups a new derived Secret; older Backups keep naming theirs. A restore also offers
every key of the store, derived again (:func:`store_keyring`), and the artifact's key
id picks one: an older artifact stays restorable from the store's list even if its
derived Secret was deleted.

A store with a ``namespaceSelector`` serves only the namespaces it selects
(:func:`check_serves`): it fills no other namespace's Backup, derives no key for it,
and lends it no ambient identity. Only the deletion of stored artifacts ignores it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.backup_store import (
    BackupStore,
    BackupStoreConditionType,
    BackupStoreStatus,
)
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.storage import (
    RUNNER_OWN_PATH_MESSAGE,
    BackupEncryption,
    BackupStorage,
)
from dockyard.core.names import OBJECT_NAME_MAX, fitted, label_value
from dockyard.core.resources import BACKUP_STORES, BACKUPS, NAMESPACES
from dockyard.core.settings import Settings
from dockyard.operator.apply import create, get, items, merge_patch, namespace_uid, patch_status
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL
from dockyard.operator.runs.context import KeyUnavailable, StorageRefused, key_id_of, load_key
from dockyard.runner import BackupError, EncryptionKey

logger = logging.getLogger(__name__)

STORE_LABEL: Final = "dockyard.io/backup-store"
KEY_ID_LABEL: Final = "dockyard.io/key-id"
KEY_ENTRY: Final = "key"  # the Secret data entry holding a key, not a key
DEFAULT_STORE: Final = "default"
_SALT: Final = b"dockyard.io/backupstore/v1"


class NoBackupStore(BackupError, reason="NoBackupStore"):
    """No store to fill a Backup from: none named or default, or two defaults."""


class StoreNotAllowed(BackupError, reason="StoreNotAllowed"):
    """The store's ``namespaceSelector`` does not select the Backup's namespace."""


async def check_serves(kube: KubeClient, store: BackupStore, namespace: str) -> None:
    """``StoreNotAllowed`` unless ``store`` serves ``namespace`` (by the Namespace's labels,
    read now, so labelling a namespace takes effect on the next pass)."""
    if store.spec.namespace_selector is None:
        return
    found = await get(kube, NAMESPACES.path(None, namespace))
    labels = ((found or {}).get("metadata") or {}).get("labels") or {}
    if found is not None and store.spec.serves(labels):
        return
    raise StoreNotAllowed(
        f"BackupStore {store.metadata.name} does not serve namespace {namespace}: its "
        f"namespaceSelector ({store.spec.namespace_selector.describe()}) does not match the "
        "namespace's labels; an administrator may label the namespace or change the store"
    )


def store_path(name: str) -> str:
    return BACKUP_STORES.path(None, name)


def derived_key(root: EncryptionKey, namespace: str, namespace_uid: str | None) -> EncryptionKey:
    """The key of the artifacts of ``namespace`` (the one whose uid is ``namespace_uid``)
    under the store key ``root``; with None, the key derived from the name alone, as
    before the uid was part of it (to read older artifacts)."""
    context = namespace if namespace_uid is None else f"{namespace}/{namespace_uid}"
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=context.encode()).derive(
        root.key
    )
    return EncryptionKey(key_id_of(material), material)


def namespace_keyring(
    roots: list[EncryptionKey], namespace: str, namespace_uid: str, recorded: str | None
) -> list[EncryptionKey]:
    """What a restore in ``namespace`` is offered: each store key derived for it, then
    the one derived from its name alone (for artifacts made before the uid counted)
    whose id is ``recorded``, the key id the restored Backup's status records."""
    older = (derived_key(root, namespace, None) for root in roots)
    return [derived_key(root, namespace, namespace_uid) for root in roots] + [
        key for key in older if key.key_id == recorded
    ]


def derived_secret_name(store: str, key_id: str) -> str:
    """The Secret, in a Backup's namespace, holding the derived key ``key_id``."""
    return fitted(store, OBJECT_NAME_MAX, suffix=f"-{key_id}")


def filled(backup: Backup) -> tuple[BackupStorage, BackupEncryption]:
    """The Backup's storage and encryption, or ``NoBackupStore`` while they are not filled."""
    storage, encryption = backup.spec.storage, backup.spec.encryption
    if storage is None or encryption is None:
        raise NoBackupStore(
            "the Backup names no storage or encryption and has not been filled from a "
            "BackupStore yet"
        )
    return storage, encryption


async def chosen_by_a_store(kube: KubeClient, backup: Backup, *, deleting: bool = False) -> bool:
    """Whether ``backup``'s S3 storage, which names no credentials Secret, is its
    BackupStore's (immutable) storage: a bucket an administrator chose, which an inline
    run may reach with the operator's own identity. A Backup's own choice never is.

    The store must serve the Backup's namespace (``StoreNotAllowed`` otherwise), except
    when ``deleting``: the artifacts a Backup stored there may always go."""
    storage = backup.spec.storage
    if backup.spec.store_ref is None or storage is None or storage.s3 is None:
        return False
    if storage.s3.credentials_secret_ref is not None:
        return False  # the run uses the Secret's keys: nothing to decide
    try:
        store = await find_store(kube, backup.spec.store_ref.name)
    except NoBackupStore:
        return False
    if store.spec.storage != storage:
        return False
    if not deleting:
        await check_serves(kube, store, backup.metadata.namespace or "")
    return True


async def find_store(kube: KubeClient, name: str | None) -> BackupStore:
    """The store ``name``, or the one marked default; ``NoBackupStore`` saying why not."""
    if name is not None:
        raw = await get(kube, store_path(name))
        if raw is None:
            raise NoBackupStore(f"BackupStore {name} does not exist")
        return _parse(raw, name)
    stores = [_parse(raw, None) for raw in await items(kube, BACKUP_STORES, None)]
    defaults = sorted((s for s in stores if s.spec.default), key=lambda s: s.metadata.name or "")
    # A default being deleted fills nothing (fill_from_store says so) while another stands.
    standing = [s for s in defaults if s.metadata.deletion_timestamp is None]
    defaults = standing or defaults
    if not defaults:
        raise NoBackupStore(
            "no BackupStore is marked default: create one (docs/backups.md), name one in "
            "storeRef, or give the Backup storage and encryption"
        )
    if len(defaults) > 1:
        names = ", ".join(s.metadata.name or "" for s in defaults)
        raise NoBackupStore(f"more than one BackupStore is marked default ({names}): mark one")
    return defaults[0]


def _parse(raw: dict[str, Any], name: str | None) -> BackupStore:
    try:
        return BackupStore.model_validate(raw)
    except ValidationError as exc:
        which = name or raw.get("metadata", {}).get("name", "?")
        raise NoBackupStore(f"BackupStore {which} is invalid: {exc.errors()[0]['msg']}") from None


async def store_keys(kube: KubeClient, store: BackupStore) -> list[EncryptionKey]:
    """Every key of ``store`` that can be read, the current one first. A key that cannot
    be (its Secret gone, say) is left out and logged: it strands only what it encrypted,
    and the store's status says which (``_report_keys``)."""
    encryption = store.spec.encryption
    keys = []
    for ref in [encryption.key_secret_ref, *encryption.previous_key_secret_refs]:
        try:
            keys.append(await load_key(kube, store.spec.secret_namespace, ref))
        except KeyUnavailable as exc:
            logger.warning(
                "store key not offered",
                extra={"store": store.metadata.name, "error": exc.message},
            )
    return keys


async def fill_from_store(kube: KubeClient, backup: Backup) -> str | None:
    """Write the store's storage and the namespace's derived key into ``backup``'s spec
    (only what it lacks); the store's name, or ``None`` when the Backup is gone (or its
    name now another's). Raises ``NoBackupStore``/``KeyUnavailable``."""
    namespace, name = backup.metadata.namespace or "", backup.metadata.name or ""
    wanted = backup.spec.store_ref.name if backup.spec.store_ref else None
    store = await find_store(kube, wanted)
    store_name = store.metadata.name or ""
    if store.metadata.deletion_timestamp is not None:
        # Its deletion waits for the Backups that name it (store_deletion): no new ones.
        raise NoBackupStore(f"BackupStore {store_name} is being deleted: it fills no new Backup")
    await check_serves(kube, store, namespace)
    spec: dict[str, Any] = {"storeRef": {"name": store_name}}
    if backup.spec.storage is None and (why := _storage_refused(store)) is not None:
        # A store made before the API server refused such a path: it would refuse the fill.
        refused = store.status.with_condition(
            BackupStoreConditionType.READY, False, StorageRefused.reason, why,
            generation=store.metadata.generation,
        )  # fmt: skip
        await write_status(kube, store, refused)
        raise StorageRefused(f"BackupStore {store_name}'s {why}")
    # Marked first (status, which tenants cannot write): the store's deletion then waits
    # for this Backup, and only for Backups it filled (store_deletion.users).
    mark = {"filledFrom": store_name}
    if not await patch_status(kube, BACKUPS, namespace, name, mark, uid=backup.metadata.uid):
        return None
    if backup.spec.storage is None:
        spec["storage"] = store.spec.storage.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    if backup.spec.encryption is None:
        root = await _report_keys(kube, store)
        key = derived_key(root, namespace, await namespace_uid(kube, namespace))
        secret = await ensure_derived_secret(kube, store_name, namespace, key)
        spec["encryption"] = {"keySecretRef": {"name": secret, "key": KEY_ENTRY}}
    path = BACKUPS.path(namespace, name)
    filled = await merge_patch(kube, path, {"spec": spec}, uid=backup.metadata.uid)
    return store_name if filled else None


def _storage_refused(store: BackupStore) -> str | None:
    """Why no Backup may take the store's storage, if its claim would cover the runner."""
    filesystem = store.spec.storage.filesystem
    if filesystem is None or not filesystem.covers_the_runner():
        return None
    return f"filesystem path {filesystem.path}: {RUNNER_OWN_PATH_MESSAGE}"


async def _report_keys(kube: KubeClient, store: BackupStore) -> EncryptionKey:
    """The store's current key; its status says which keys it has and whether each could
    be read (a rotated-out key that is gone strands the artifacts it encrypted)."""
    encryption, where = store.spec.encryption, store.spec.secret_namespace
    current = await load_key(kube, where, encryption.key_secret_ref)
    ids, missing = [current.key_id], []
    for ref in encryption.previous_key_secret_refs:
        try:
            ids.append((await load_key(kube, where, ref)).key_id)
        except KeyUnavailable as exc:
            missing.append(exc.message)
    status = store.status.model_copy(update={"current_key_id": current.key_id, "key_ids": ids})
    generation = store.metadata.generation
    if (why := _storage_refused(store)) is not None:  # its keys serve, its storage does not
        status = status.with_condition(
            BackupStoreConditionType.READY, False, StorageRefused.reason, why,
            generation=generation,
        )  # fmt: skip
    elif missing:
        status = status.with_condition(
            BackupStoreConditionType.READY,
            False,
            KeyUnavailable.reason,
            "; ".join(missing),
            generation=generation,
        )
    else:
        status = status.with_condition(
            BackupStoreConditionType.READY,
            True,
            "KeysReadable",
            f"{len(ids)} keys readable, current {current.key_id}",
            generation=generation,
        )
    await write_status(kube, store, status)
    return current


async def write_status(kube: KubeClient, store: BackupStore, status: BackupStoreStatus) -> None:
    try:
        await patch_status(
            kube,
            BACKUP_STORES,
            None,
            store.metadata.name or "",
            status.observed(store.metadata.generation).body(),
            uid=store.metadata.uid,
        )
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:  # a report only
        logger.warning("BackupStore status not written", extra={"error": str(exc)})


async def ensure_derived_secret(
    kube: KubeClient, store: str, namespace: str, key: EncryptionKey
) -> str:
    """Make sure the Secret holding ``key`` exists in ``namespace``; its name."""
    name = derived_secret_name(store, key.key_id)
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                STORE_LABEL: label_value(store),
                KEY_ID_LABEL: key.key_id,
            },
            "annotations": {"dockyard.io/purpose": f"backup key derived from BackupStore {store}"},
        },
        "data": {KEY_ENTRY: base64.b64encode(key.key).decode()},
    }
    if not await create(kube, manifest):
        # It was there: it must hold this very key (its id is the key's fingerprint).
        found = await load_key(kube, namespace, SecretKeyReference(name=name, key=KEY_ENTRY))
        if found.key_id != key.key_id:
            raise KeyUnavailable(
                f"Secret {name} exists and holds another key than BackupStore {store}'s"
            )
    return name


async def store_keyring(kube: KubeClient, backup: Backup) -> list[EncryptionKey]:
    """The keys of the Backup's store, derived for its namespace: none without a store,
    or when the store, a key or the namespace is gone or refuses (the Backup's own key
    may still do). An apiserver that fails a read raises ``KubeError``: that says nothing
    about the keys."""
    if backup.spec.store_ref is None:
        return []
    namespace = backup.metadata.namespace or ""
    try:
        store = await find_store(kube, backup.spec.store_ref.name)
        await check_serves(kube, store, namespace)
        roots = await store_keys(kube, store)
        uid = await namespace_uid(kube, namespace)
    except BackupError as exc:
        logger.warning("store keys not offered", extra={"error": exc.message})
        return []
    return namespace_keyring(roots, namespace, uid, backup.status.key_id)


async def ensure_default_store(kube: KubeClient, settings: Settings) -> str | None:
    """Development: when no BackupStore is marked default, create ``default`` (a
    filesystem store under ``DOCKYARD_BACKUP_ROOT``) and its key Secret, 32 random bytes,
    in ``DOCKYARD_NAMESPACE``. Its name when it was created, else None."""
    # Any store marked default counts, even an invalid one: a second default would only
    # make every Backup wait on the choice.
    if any(raw.get("spec", {}).get("default") for raw in await items(kube, BACKUP_STORES, None)):
        return None
    secret = f"{DEFAULT_STORE}-backup-store-key"
    with contextlib.suppress(KubeError):  # it may exist, or the operator may not create it
        await create(
            kube,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": settings.namespace}},
        )
    await create(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": secret,
                "namespace": settings.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, STORE_LABEL: DEFAULT_STORE},
            },
            "data": {KEY_ENTRY: base64.b64encode(secrets.token_bytes(32)).decode()},
        },
    )
    created = await create(
        kube,
        {
            "apiVersion": BACKUP_STORES.api_version,
            "kind": BACKUP_STORES.kind,
            "metadata": {"name": DEFAULT_STORE, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": {
                "default": True,
                "storage": {"filesystem": {"path": str(settings.backup_root.expanduser())}},
                "encryption": {"keySecretRef": {"name": secret, "key": KEY_ENTRY}},
                "secretNamespace": settings.namespace,
            },
        },
    )
    return DEFAULT_STORE if created else None
