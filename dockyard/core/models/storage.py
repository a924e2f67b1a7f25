"""Where backup artifacts are stored and how they are encrypted.

This module owns the storage locations (a filesystem directory, typically a
PersistentVolumeClaim, or an S3 bucket; exactly one), the encryption key reference and
the CEL rules on them. A Backup's spec and a BackupSchedule's template use them; the
runner's ``FilesystemStore``/``S3Store`` are what a location becomes at run time.
"""

from __future__ import annotations

import re
from typing import Final, Self

from pydantic import Field, field_validator, model_validator

from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import ValidationRule
from dockyard.core.models.references import (
    OBJECT_NAME_PATTERN,
    SecretKeyReference,
    SecretReference,
)
from dockyard.core.models.rules import check_exactly_one, exactly_one_rule

# An S3 bucket name, as AWS and S3-compatible stores accept it.
BUCKET_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# A key prefix: relative (no leading /), no empty or dot-dot segments.
PREFIX_PATTERN: Final = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/?$"
# An absolute path without doubled slashes, nor . and .. segments (a separate rule, as
# RE2 has no lookahead to fold it into the pattern).
PATH_PATTERN: Final = r"^(/[^/]+)+/?$"
DOT_SEGMENT_PATTERN: Final = r"(^|/)\.\.?(/|$)"
DOT_SEGMENT_MESSAGE: Final = "path must not contain . or .. segments"
ENDPOINT_PATTERN: Final = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
# Where a runner Job's own files are: its image's system directories, its key, its /tmp.
# A claim mounted at or over one of them would replace what the runner runs or reads.
RUNNER_OWN_PATH_PATTERN: Final = (
    r"^/(bin|boot|dev|etc|lib|lib32|lib64|libx32|opt|proc|root|run|sbin|sys|tmp|usr)(/|$)"
    r"|^/var/?$|^/var/run(/|$)"
)
RUNNER_OWN_PATH_MESSAGE: Final = (
    "a runner Job mounts claimName at path, which must not be or lie under the runner "
    "image's own directories (/bin, /dev, /etc, /lib, /opt, /proc, /run, /sbin, /sys, /tmp, "
    "/usr, /var/run, and the like): use a directory of its own, such as /backups"
)


class FilesystemStorage(CRModel):
    """A directory on a filesystem, typically a PersistentVolumeClaim mounted by the runner."""

    cel_rules = (
        ValidationRule(
            rule=f"!self.path.matches(r'{DOT_SEGMENT_PATTERN}')",
            message=DOT_SEGMENT_MESSAGE,
            field_path=".path",
        ),
        ValidationRule(
            rule=f"!has(self.claimName) || !self.path.matches(r'{RUNNER_OWN_PATH_PATTERN}')",
            message=RUNNER_OWN_PATH_MESSAGE,
            field_path=".path",
        ),
    )

    path: str = Field(min_length=1, max_length=1024, pattern=PATH_PATTERN)
    """Absolute directory the artifacts are written under (in <namespace>/<backup>/ below it).
    Artifacts are written under a temporary name and renamed once complete, so a partial artifact
    is never catalogued."""
    claim_name: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_PATTERN)
    """PersistentVolumeClaim, in the backup's namespace, that a runner Job mounts at path. Without
    it the path must exist where the runner runs (the operator's own volume for inline runs)."""

    @field_validator("path")
    @classmethod
    def _no_dot_segments(cls, path: str) -> str:
        if re.search(DOT_SEGMENT_PATTERN, path):
            raise ValueError(DOT_SEGMENT_MESSAGE)
        return path

    def covers_the_runner(self) -> bool:
        """Whether a runner Job would mount the claim over its own files.

        The API server refuses such a path (CEL, on create and on a change of it); this
        is for objects stored before that rule, which the models still read.
        """
        return self.claim_name is not None and bool(re.search(RUNNER_OWN_PATH_PATTERN, self.path))


class S3Storage(CRModel):
    """A bucket of an S3-compatible object store."""

    cel_rules = (
        ValidationRule(
            rule=f"!has(self.prefix) || !self.prefix.matches(r'{DOT_SEGMENT_PATTERN}')",
            message="prefix must not contain . or .. segments",
            field_path=".prefix",
        ),
    )

    bucket: str = Field(min_length=3, max_length=63, pattern=BUCKET_PATTERN)
    """Name of the bucket the artifacts are written to."""
    prefix: str | None = Field(default=None, max_length=512, pattern=PREFIX_PATTERN)
    """Key prefix the artifacts are written under (then <namespace>/<backup>/), without a leading
    slash, for example dockyard/prod."""

    @field_validator("prefix")
    @classmethod
    def _no_dot_segments(cls, prefix: str | None) -> str | None:
        if prefix is not None and re.search(DOT_SEGMENT_PATTERN, prefix):
            raise ValueError("prefix must not contain . or .. segments")
        return prefix

    endpoint: str | None = Field(default=None, max_length=512, pattern=ENDPOINT_PATTERN)
    """URL of an S3-compatible service (MinIO, Ceph, ...), for example
    https://minio.storage.svc:9000. Omit it for AWS S3."""
    region: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9-]+$")
    """Region of the bucket, for example eu-central-1."""
    credentials_secret_ref: SecretReference | None = None
    """Secret, in the backup's namespace, with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    (and optionally AWS_SESSION_TOKEN). Without it a runner Job uses its Pod's ambient
    credentials (for example a workload identity); an inline run uses the operator's only for
    a BackupStore's storage, and refuses a bucket the Backup chose itself."""
    ca_bundle_secret_ref: SecretKeyReference | None = None
    """Key of a Secret, in the backup's namespace, holding the PEM certificates of the authority
    that signed the endpoint's TLS certificate (a private CA, as in-cluster object stores often
    have). Without it the runner trusts the public authorities it ships with."""


class BackupStorage(CRModel):
    """Where artifacts are stored: exactly one of filesystem and s3."""

    cel_rules = (exactly_one_rule("filesystem", "s3"),)

    filesystem: FilesystemStorage | None = None
    """A directory, typically on a PersistentVolumeClaim."""
    s3: S3Storage | None = None
    """A bucket of an S3-compatible object store."""

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        check_exactly_one(self, "filesystem", "s3")
        return self


class BackupEncryption(CRModel):
    """How artifacts are encrypted at rest (authenticated encryption, always on)."""

    key_secret_ref: SecretKeyReference
    """Key of a Secret, in the backup's namespace, holding the encryption key: 32 random bytes, raw
    or base64-encoded. The key never leaves the Secret; status.keyId records which key encrypted
    an artifact, so keys can be rotated while older artifacts stay restorable with their own."""


__all__ = [
    "BUCKET_PATTERN",
    "DOT_SEGMENT_MESSAGE",
    "DOT_SEGMENT_PATTERN",
    "ENDPOINT_PATTERN",
    "PATH_PATTERN",
    "PREFIX_PATTERN",
    "BackupEncryption",
    "BackupStorage",
    "FilesystemStorage",
    "S3Storage",
]
