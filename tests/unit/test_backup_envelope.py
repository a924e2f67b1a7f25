"""The artifact format: what seals opens, and every tampering is caught and named."""

from __future__ import annotations

import os
import struct

import pytest

from dockyard.runner import (
    ArtifactCorrupt,
    ArtifactTruncated,
    EncryptionKey,
    Keyring,
    Opener,
    Sealer,
    WrongKey,
)
from dockyard.runner.envelope import MIN_CHUNK_SIZE, TAG_BYTES, parse_header

CHUNK = MIN_CHUNK_SIZE
KEY = EncryptionKey("k1", bytes(range(32)))


def seal(data: bytes, key: EncryptionKey = KEY, chunk: int = CHUNK) -> tuple[bytes, list[bytes]]:
    """(header, frames) for ``data``, cut as the runner cuts it."""
    sealer = Sealer(key, chunk_size=chunk)
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    if len(pieces[-1]) == chunk:
        pieces.append(b"")  # a full last chunk is followed by an empty final frame
    frames = [sealer.seal(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    return sealer.header, frames


def open_all(artifact: bytes, keys: EncryptionKey | Keyring = KEY, step: int = 7919) -> bytes:
    opener = Opener(keys)
    out = bytearray()
    for i in range(0, len(artifact), step):
        for plain in opener.feed(artifact[i : i + step]):
            out += plain
    out += opener.finish()
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_what_is_sealed_opens_to_the_same_bytes(size: int) -> None:
    data = os.urandom(size)
    header, frames = seal(data)
    assert open_all(header + b"".join(frames)) == data


@pytest.mark.parametrize("step", [1, 13, CHUNK + TAG_BYTES, 10 * CHUNK])
def test_opening_does_not_depend_on_how_the_bytes_are_sliced(step: int) -> None:
    data = os.urandom(2 * CHUNK + 100)
    header, frames = seal(data)
    assert open_all(header + b"".join(frames), step=step) == data


def test_a_full_last_chunk_may_be_sealed_final_without_an_empty_frame() -> None:
    sealer = Sealer(KEY, chunk_size=CHUNK)
    data = os.urandom(2 * CHUNK)
    artifact = (
        sealer.header
        + sealer.seal(data[:CHUNK], final=False)
        + sealer.seal(data[CHUNK:], final=True)
    )
    assert open_all(artifact) == data


def test_the_header_records_the_key_id_and_chunk_size_in_the_clear() -> None:
    header, _ = seal(b"x")
    parsed = parse_header(header)
    assert parsed is not None
    assert (parsed.key_id, parsed.chunk_size) == ("k1", CHUNK)
    assert KEY.key not in header


def test_two_artifacts_of_the_same_data_share_no_ciphertext() -> None:
    data = b"\0" * CHUNK * 2
    _, first = seal(data)
    _, second = seal(data)
    assert first[0] != second[0]


def test_a_wrong_key_with_the_right_id_is_refused_before_any_frame() -> None:
    header, _ = seal(b"secret rows")
    impostor = EncryptionKey("k1", bytes(32))
    with pytest.raises(WrongKey, match="authentication failed"):
        Opener(impostor).feed(header)


def test_an_unknown_key_id_names_the_ids_offered() -> None:
    header, frames = seal(b"rows")
    with pytest.raises(WrongKey, match=r"encrypted with key 'k1'.*'k2'"):
        open_all(header + b"".join(frames), keys=EncryptionKey.generate("k2"))


def test_a_keyring_opens_artifacts_of_a_rotated_out_key() -> None:
    old = EncryptionKey.generate("2024")
    header, frames = seal(b"old rows", key=old)
    ring = Keyring([EncryptionKey.generate("2025"), old])
    assert open_all(header + b"".join(frames), keys=ring) == b"old rows"


def test_a_flipped_bit_in_a_frame_fails_authentication() -> None:
    header, frames = seal(os.urandom(3 * CHUNK))
    artifact = bytearray(header + b"".join(frames))
    artifact[len(header) + (CHUNK + TAG_BYTES) + 5] ^= 0x01
    with pytest.raises(ArtifactCorrupt, match="authentication failed at frame 1"):
        open_all(bytes(artifact))


def test_an_edited_header_is_refused() -> None:
    header, frames = seal(os.urandom(CHUNK))
    # Chunk size field: bytes 12..16 of the header.
    edited = header[:12] + struct.pack(">I", 2 * CHUNK) + header[16:]
    with pytest.raises(WrongKey):
        open_all(edited + b"".join(frames))


def test_swapped_frames_fail_authentication() -> None:
    header, frames = seal(os.urandom(3 * CHUNK + 1))
    frames[0], frames[1] = frames[1], frames[0]
    with pytest.raises(ArtifactCorrupt, match="frame 0"):
        open_all(header + b"".join(frames))


def test_a_frame_from_another_artifact_fails_authentication() -> None:
    data = os.urandom(2 * CHUNK + 1)
    header, frames = seal(data)
    _, other = seal(data)
    frames[1] = other[1]
    with pytest.raises(ArtifactCorrupt):
        open_all(header + b"".join(frames))


def test_an_artifact_cut_at_a_frame_boundary_is_truncated() -> None:
    header, frames = seal(os.urandom(3 * CHUNK + 5))
    with pytest.raises(ArtifactTruncated, match="ends after frame 1, which is not its last"):
        open_all(header + b"".join(frames[:2]))


def test_an_artifact_cut_inside_a_frame_is_refused() -> None:
    header, frames = seal(os.urandom(3 * CHUNK + 5))
    artifact = header + b"".join(frames)
    with pytest.raises(ArtifactCorrupt):
        open_all(artifact[: len(header) + CHUNK + 100])


@pytest.mark.parametrize("cut", [0, 5, 20])
def test_an_artifact_cut_inside_its_header_is_truncated(cut: int) -> None:
    header, _ = seal(b"rows")
    with pytest.raises(ArtifactTruncated, match="header"):
        open_all(header[:cut])


def test_bytes_after_the_final_frame_are_refused() -> None:
    header, frames = seal(os.urandom(CHUNK + 3))
    with pytest.raises(ArtifactCorrupt):
        open_all(header + b"".join(frames) + os.urandom(CHUNK + TAG_BYTES + 1))


def test_bytes_after_a_full_size_final_frame_are_named_as_such() -> None:
    sealer = Sealer(KEY, chunk_size=CHUNK)
    artifact = sealer.header + sealer.seal(os.urandom(CHUNK), final=True)
    with pytest.raises(ArtifactCorrupt, match="follows the final frame 0"):
        open_all(artifact + b"extra")


def test_something_else_than_an_artifact_is_refused_at_once() -> None:
    with pytest.raises(ArtifactCorrupt, match="not a Dockyard backup artifact"):
        Opener(KEY).feed(b"PGDMP\x01\x0e\x00")


def test_only_the_final_chunk_may_be_short() -> None:
    sealer = Sealer(KEY, chunk_size=CHUNK)
    with pytest.raises(ValueError, match="final chunk"):
        sealer.seal(b"short", final=False)
    sealer.seal(b"short", final=True)
    with pytest.raises(RuntimeError):
        sealer.seal(b"", final=True)
