"""The artifact format: a header, then the compressed dump in AES-256-GCM frames.

This module owns the bytes of an artifact and nothing else (no I/O): :class:`Sealer`
turns compressed dump bytes into an artifact, :class:`Opener` turns an artifact back
into them, both incrementally so any size streams through bounded memory.

Layout (integers big-endian)::

    header   magic "DKYD-BKP" (8) | version 1 (1) | cipher 1 (1) | compression 1 (1)
             | reserved 0 (1) | chunk size (4) | salt (32) | nonce prefix (4)
             | key id length (1) | key id (ASCII) | key check (32)
    frames   AES-256-GCM(plaintext chunk) || tag (16), repeated

Why it is built this way:

- Per-artifact key. The AES key of one artifact is HKDF-SHA256(master key, salt)
  with a fresh random 32-byte salt, so no (key, nonce) pair can ever repeat across
  artifacts, and the amount of data under one AES key is one artifact's.
- Nonce = 4-byte random prefix || 8-byte frame counter: unique within the artifact.
- Associated data = the whole header || frame index (8) || final flag (1). A frame
  moved, swapped, dropped, or taken from another artifact fails authentication; the
  header (key id, chunk size, salt) cannot be edited; and only the last frame is
  flagged final, so cutting the artifact at a frame boundary is detected too.
- Key check = HMAC-SHA256 over the header with a second HKDF output: a wrong key is
  reported as such before any frame is read (and before a restore touches anything),
  and it makes the format key-committing, which GCM alone is not.
- Every frame holds ``chunk size`` plaintext bytes except the final one (0 to chunk
  size), so frame boundaries need no length fields; a reader knows a frame is the
  last one because nothing follows it.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dockyard.runner.errors import ArtifactCorrupt, ArtifactTruncated, WrongKey
from dockyard.runner.keys import EncryptionKey, Keyring, check_key_id

MAGIC = b"DKYD-BKP"
FORMAT_VERSION = 1
CIPHER_AES256GCM_HKDF_SHA256 = 1
COMPRESSION_ZSTD = 1
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 4 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
TAG_BYTES = 16

_FIXED = struct.Struct(">8sBBBBI32s4sB")  # everything before the key id
_SALT_BYTES = 32
_NONCE_PREFIX_BYTES = 4
_CHECK_BYTES = 32
_HKDF_INFO = b"dockyard backup artifact v1: aes-256-gcm key, header check key"
# The longest header: the fixed part, a 255-byte key id, the check.
MAX_HEADER_BYTES = _FIXED.size + 255 + _CHECK_BYTES


@dataclass(frozen=True)
class Header:
    """An artifact's header, parsed (and, once opened with a key, authenticated)."""

    key_id: str
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    raw: bytes  # the header's exact bytes: they are the frames' associated data

    @property
    def frame_bytes(self) -> int:
        """Stored size of every frame but the last."""
        return self.chunk_size + TAG_BYTES


def _derive(key: EncryptionKey, salt: bytes) -> tuple[AESGCM, bytes]:
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=_HKDF_INFO).derive(
        key.key
    )
    return AESGCM(material[:32]), material[32:]


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(8, "big")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class Sealer:
    """Compressed dump bytes in, artifact bytes out: the header, then one frame per chunk.

    The caller cuts the input into chunks of exactly :attr:`chunk_size` bytes (the last
    one may be shorter or empty) and says which one is final; :meth:`seal` returns the
    frame. Not thread-safe, but safe to call from one worker thread at a time.
    """

    def __init__(self, key: EncryptionKey, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
        key_id = key.key_id.encode("ascii")
        salt = secrets.token_bytes(_SALT_BYTES)
        prefix = secrets.token_bytes(_NONCE_PREFIX_BYTES)
        self._aead, check_key = _derive(key, salt)
        unchecked = (
            _FIXED.pack(
                MAGIC,
                FORMAT_VERSION,
                CIPHER_AES256GCM_HKDF_SHA256,
                COMPRESSION_ZSTD,
                0,
                chunk_size,
                salt,
                prefix,
                len(key_id),
            )
            + key_id
        )
        self.header = unchecked + hmac.digest(check_key, unchecked, "sha256")
        self.chunk_size = chunk_size
        self._prefix = prefix
        self._index = 0
        self._finished = False

    def seal(self, chunk: bytes, *, final: bool) -> bytes:
        """The frame for the next ``chunk``; every chunk but the final must be full size."""
        if self._finished:
            raise RuntimeError("the final frame was already sealed")
        if len(chunk) > self.chunk_size or (not final and len(chunk) != self.chunk_size):
            raise ValueError("only the final chunk may be shorter than the chunk size")
        index = self._index
        self._index += 1
        self._finished = final
        return self._aead.encrypt(
            _nonce(self._prefix, index), chunk, _aad(self.header, index, final)
        )


def parse_header(data: bytes | bytearray) -> Header | None:
    """The header at the start of ``data``, or ``None`` when more bytes are needed.

    Raises :class:`ArtifactCorrupt` when the bytes are not a Dockyard artifact header.
    """
    if len(data) < _FIXED.size:
        if not MAGIC.startswith(bytes(data[: len(MAGIC)])):
            raise ArtifactCorrupt("not a Dockyard backup artifact (bad magic)")
        return None
    magic, version, cipher, compression, _, chunk, salt, prefix, id_len = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactCorrupt("not a Dockyard backup artifact (bad magic)")
    if version != FORMAT_VERSION:
        raise ArtifactCorrupt(f"unsupported artifact format version {version}")
    if cipher != CIPHER_AES256GCM_HKDF_SHA256 or compression != COMPRESSION_ZSTD:
        raise ArtifactCorrupt(f"unsupported cipher {cipher} or compression {compression}")
    if not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
        raise ArtifactCorrupt(f"artifact header has an invalid chunk size {chunk}")
    end = _FIXED.size + id_len + _CHECK_BYTES
    if len(data) < end:
        return None
    try:
        key_id = check_key_id(bytes(data[_FIXED.size : _FIXED.size + id_len]).decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactCorrupt("artifact header has an invalid key id") from None
    return Header(key_id, chunk, salt, prefix, bytes(data[:end]))


def read_header(data: bytes | bytearray, keys: EncryptionKey | Keyring) -> Header | None:
    """The header at the start of ``data``, checked against ``keys``; ``None`` if incomplete.

    Raises :class:`WrongKey` when no key offered opens the artifact, and
    :class:`ArtifactCorrupt` when the bytes are not an artifact header.
    """
    opened = _authenticate_header(data, Keyring.of(keys))
    return opened[0] if opened else None


def _authenticate_header(data: bytes | bytearray, keys: Keyring) -> tuple[Header, AESGCM] | None:
    header = parse_header(data)
    if header is None:
        return None
    aead, check_key = _derive(keys.get(header.key_id), header.salt)
    unchecked, check = header.raw[:-_CHECK_BYTES], header.raw[-_CHECK_BYTES:]
    if not hmac.compare_digest(hmac.digest(check_key, unchecked, "sha256"), check):
        raise WrongKey(
            f"authentication failed: the key offered as {header.key_id!r} is not the key "
            "this artifact was encrypted with (or its header was altered)"
        )
    return header, aead


class Opener:
    """Artifact bytes in (any slicing), compressed dump bytes out, each frame authenticated.

    :meth:`feed` returns the plaintext of every frame known not to be the last one;
    :meth:`finish` authenticates the final frame and returns its plaintext. Nothing is
    returned that has not been authenticated. Holds at most about two frames.
    """

    def __init__(self, keys: EncryptionKey | Keyring) -> None:
        self._keys = Keyring.of(keys)
        self._buffer = bytearray()
        self._opened: tuple[Header, AESGCM] | None = None
        self._index = 0
        self._done = False

    @property
    def header(self) -> Header | None:
        """The header, once it has been read and its key check passed."""
        return self._opened[0] if self._opened else None

    def feed(self, data: bytes) -> list[bytes]:
        """Take more artifact bytes; return the plaintext of the frames now complete."""
        if self._done:
            raise RuntimeError("the opener was already finished")
        self._buffer += data
        header = self._open_header()
        if header is None:
            return []
        out: list[bytes] = []
        size = header.frame_bytes
        start = 0
        # Frames are decrypted in place (no copy of the buffer), then dropped at once.
        with memoryview(self._buffer) as view:
            # Strictly more than one frame: a full-size frame may still be the last one.
            while len(view) - start > size:
                out.append(self._decrypt(view[start : start + size], final=False))
                start += size
        del self._buffer[:start]
        return out

    def finish(self) -> bytes:
        """The final frame's plaintext; raises when the artifact is cut short or extended."""
        if self._done:
            raise RuntimeError("the opener was already finished")
        self._done = True
        if self._open_header() is None:
            raise ArtifactTruncated("artifact truncated: it ends inside its header")
        if len(self._buffer) < TAG_BYTES:
            raise ArtifactTruncated(
                f"artifact truncated: it ends inside frame {self._index}, before its tag"
            )
        with memoryview(self._buffer) as view:
            return self._decrypt(view, final=True)

    def _open_header(self) -> Header | None:
        """The header, reading and checking it first if that has not happened yet."""
        if self._opened is not None:
            return self._opened[0]
        opened = _authenticate_header(self._buffer, self._keys)
        if opened is None:
            return None
        self._opened = opened
        del self._buffer[: len(opened[0].raw)]
        return opened[0]

    def _decrypt(self, frame: memoryview, *, final: bool) -> bytes:
        if self._opened is None:
            raise RuntimeError("a frame cannot be decrypted before the header is read")
        header, aead = self._opened
        index = self._index
        nonce = _nonce(header.nonce_prefix, index)
        try:
            plain = aead.decrypt(nonce, frame, _aad(header.raw, index, final))
        except InvalidTag:
            raise _explain(aead, header, frame, index, final) from None
        self._index += 1
        return plain


def _explain(
    aead: AESGCM, header: Header, frame: memoryview, index: int, final: bool
) -> ArtifactCorrupt:
    """Why frame ``index`` failed: cut short, extended, or modified."""
    nonce = _nonce(header.nonce_prefix, index)
    try:
        # Authentic with the other flag: the frame is fine, its position is not.
        aead.decrypt(nonce, frame, _aad(header.raw, index, not final))
    except InvalidTag:
        return ArtifactCorrupt(
            f"authentication failed at frame {index}: the artifact was modified, "
            "or its frames were reordered"
        )
    if final:
        return ArtifactTruncated(
            f"artifact truncated: it ends after frame {index}, which is not its last"
        )
    return ArtifactCorrupt(f"authentication failed: data follows the final frame {index}")
