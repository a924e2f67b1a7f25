"""Artifact encryption keys: what one is, how it is read from a Secret, and key rotation.

A key is 32 random bytes (AES-256) with a ``key_id`` that names it. The id is written,
in the clear, into every artifact's header and into the Backup's status, so a restore
knows which key to fetch and a rotated-out key can still open old artifacts: restores
and verifications take a :class:`Keyring`, backups one :class:`EncryptionKey`.

Key material arrives from a Kubernetes Secret, mounted as a file or passed as an
environment variable, so :meth:`EncryptionKey.from_secret_value` accepts the three
shapes people put there: 32 raw bytes, 64 hex digits or base64 (standard or URL-safe,
padded or not), surrounding whitespace ignored for the two text forms. The key bytes
never appear in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dockyard.runner.errors import WrongKey

KEY_BYTES = 32
# Key ids travel in artifact headers, statuses and file names of Secrets: plain
# printable ASCII, starting with a letter or digit, at most 128 characters.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def check_key_id(key_id: str) -> str:
    """``key_id`` itself, or ``ValueError`` when it is not a valid key id."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(
            "a key id is 1 to 128 characters of letters, digits and . _ : / -, "
            "starting with a letter or digit"
        )
    return key_id


@dataclass(frozen=True)
class EncryptionKey:
    """One AES-256 key and the id recorded in the artifacts it encrypts."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key_id(self.key_id)
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"an encryption key must be {KEY_BYTES} bytes")

    @classmethod
    def generate(cls, key_id: str) -> EncryptionKey:
        """A new random key (for tests and for documentation examples)."""
        return cls(key_id, secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_secret_value(cls, key_id: str, value: bytes | str) -> EncryptionKey:
        """Read a key as stored in a Secret: raw bytes, hex or base64 (see the module doc)."""
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if len(raw) == KEY_BYTES:
            return cls(key_id, raw)
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(_SHAPES) from None
        if _HEX.fullmatch(text):
            return cls(key_id, bytes.fromhex(text))
        decoded = _base64(text)
        if decoded is None or len(decoded) != KEY_BYTES:
            raise ValueError(_SHAPES)
        return cls(key_id, decoded)


_SHAPES = f"an encryption key must be {KEY_BYTES} bytes: raw, 64 hex digits, or base64"


def _base64(text: str) -> bytes | None:
    alphabet = "-_" if ("-" in text or "_" in text) else "+/"
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=alphabet.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None


class Keyring:
    """The keys a restore may use, by id: the current one and those rotated out."""

    def __init__(self, keys: Iterable[EncryptionKey]) -> None:
        self._keys: dict[str, EncryptionKey] = {}
        for key in keys:
            if key.key_id in self._keys and self._keys[key.key_id] != key:
                raise ValueError(f"two different keys share the id {key.key_id!r}")
            self._keys[key.key_id] = key

    @classmethod
    def of(cls, keys: EncryptionKey | Keyring | Iterable[EncryptionKey]) -> Keyring:
        """``keys`` as a keyring (a single key becomes a keyring of one)."""
        if isinstance(keys, Keyring):
            return keys
        if isinstance(keys, EncryptionKey):
            return cls([keys])
        return cls(keys)

    def get(self, key_id: str) -> EncryptionKey:
        """The key named ``key_id``, or :class:`WrongKey` saying which ids were offered."""
        try:
            return self._keys[key_id]
        except KeyError:
            offered = ", ".join(repr(k) for k in sorted(self._keys)) or "none"
            raise WrongKey(
                f"authentication failed: the artifact was encrypted with key {key_id!r}, "
                f"and the keys offered are {offered}"
            ) from None

    def __iter__(self) -> Iterator[EncryptionKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)!r})"
