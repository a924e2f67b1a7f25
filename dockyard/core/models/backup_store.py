"""The BackupStore kind: where Backups go, and with which keys, when they do not say.

A cluster-scoped platform default, like Velero's BackupStorageLocation: a storage
location and a list of encryption keys (the current one and those rotated out), one
store marked ``default``, and optionally a ``namespaceSelector`` bounding the namespaces it
serves (like KubeStash's usage policy). A Backup (or a BackupSchedule's template) that names no
``storage`` or no ``encryption`` takes them from the store its ``storeRef`` names, or
from the default store; an explicit field still wins.

The keys stay in the store's ``secretNamespace``: what a Backup in namespace N gets is a
key derived from the store's key for N alone (HKDF-SHA256), written into a Secret of N
that the Backup then names. So a tenant who can read its own Secrets can decrypt its own
artifacts and nobody else's, and an artifact names, by its key id, the derived key that
opens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar, Final

from pydantic import Field

from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import CRDInfo, PrinterColumn, ValidationRule
from dockyard.core.models.label_selector import LabelSelector
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.status import Status
from dockyard.core.models.storage import BackupStorage

MAX_PREVIOUS_KEYS: Final = 32
NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class BackupStoreEncryption(CRModel):
    """The store's keys: the current one encrypts new artifacts, the previous ones still
    open older artifacts (restores pick the key by the artifact's key id)."""

    key_secret_ref: SecretKeyReference
    """Key of a Secret, in secretNamespace, holding the current key: 32 random bytes, raw, hex or
    base64. To rotate, point this at a new Secret and move the old reference to
    previousKeySecretRefs."""
    previous_key_secret_refs: list[SecretKeyReference] = Field(
        default_factory=list, max_length=MAX_PREVIOUS_KEYS
    )
    """Keys rotated out, each a key of a Secret in secretNamespace. They encrypt nothing new; a
    restore of an artifact one of them encrypted finds it here by the artifact's key id. Remove
    one only when no artifact it encrypted is kept."""


class BackupStoreSpec(CRModel):
    """Where artifacts go and which keys encrypt them, for Backups that do not say."""

    cel_rules = (
        ValidationRule(
            rule="self.storage == oldSelf.storage",
            message="storage is immutable: create a new BackupStore instead",
            field_path=".storage",
        ),
    )

    default: bool = False
    """Whether Backups that name no store use this one. Mark one store only: with two, such Backups
    wait with a condition naming both."""
    storage: BackupStorage
    """Where the artifacts are stored: exactly one of filesystem and s3. A claimName, an S3
    credentialsSecretRef and a caBundleSecretRef name objects in each Backup's own namespace, as
    they do in a Backup."""
    encryption: BackupStoreEncryption
    """The current key and the keys rotated out."""
    secret_namespace: str = Field(
        default="dockyard-system", max_length=63, pattern=NAMESPACE_PATTERN
    )
    """Namespace of the key Secrets; only the operator reads them there."""
    namespace_selector: LabelSelector | None = None
    """The namespaces whose Backups the store serves, by their labels; unset, every namespace.
    A Backup in a namespace it does not select is not filled from it (it waits with the reason
    StoreNotAllowed), gets none of its keys, and cannot reach its S3 bucket with the operator's
    identity. Deleting artifacts already stored there goes on."""

    def serves(self, namespace_labels: Mapping[str, str]) -> bool:
        """Whether a namespace with these labels may use the store."""
        selector = self.namespace_selector
        return selector is None or selector.matches(namespace_labels)


class BackupStoreConditionType(StrEnum):
    """The condition types the operator sets on a BackupStore."""

    READY = "Ready"
    """Every key of the store could be read, and its storage may be used."""
    DELETION_BLOCKED = "DeletionBlocked"
    """The store is being deleted, and Backups still name it (reason InUse)."""


class BackupStoreStatus(Status):
    """The observed state of the store, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": (
            "Current conditions: Ready, False with the reason KeyUnavailable and which "
            "Secret is missing when a key cannot be read, or StorageRefused when its claim "
            "path would cover the runner's own files (stored before the API server refused "
            "such a path); DeletionBlocked, True with the reason InUse and the first Backups "
            "by name while the store is being deleted and Backups still name it."
        ),
    }

    current_key_id: str | None = Field(default=None, max_length=128)
    """Fingerprint of the current key (never the key)."""
    key_ids: list[str] = Field(default_factory=list, max_length=MAX_PREVIOUS_KEYS + 1)
    """Fingerprints of every key of the store, the current one first."""


class BackupStore(CustomResource):
    """A BackupStore is a cluster-wide place for Backups: a storage location and its
    encryption keys, used by Backups that do not name their own."""

    crd = CRDInfo(
        kind="BackupStore",
        plural="backupstores",
        short_names=("bkstore",),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("Default", "boolean", ".spec.default", "Used by Backups naming none."),
            PrinterColumn("Key", "string", ".status.currentKeyId", "The current key's id."),
            PrinterColumn(
                "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Keys read."
            ),
        ),
    )

    spec: BackupStoreSpec
    """Where and with which keys."""
    status: BackupStoreStatus = status_field(
        BackupStoreStatus, "The observed state of the store, written by the operator."
    )


__all__ = [
    "BackupStore",
    "BackupStoreConditionType",
    "BackupStoreEncryption",
    "BackupStoreSpec",
    "BackupStoreStatus",
]
