"""The released OpenAPI documents in ``specs/released/`` and the verdict on the code's.

Each release is kept as ``openapi-<MAJOR.MINOR.PATCH>.yaml`` and never changes; the
newest by semantic version is "the last release". The code's document passes when it
breaks nothing of it (``compat.breaking_changes``), or when its major is greater: a
new major may break, as long as the previous one is still served.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dockyard.contract.compat import breaking_changes

Version = tuple[int, int, int]

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_RELEASED_NAME = re.compile(r"^openapi-(\d+\.\d+\.\d+)\.yaml$")


class ReleaseError(Exception):
    """A released document cannot be read or written as asked."""


@dataclass(frozen=True, order=True)
class Release:
    """One released document, ordered by its semantic version."""

    version: Version
    path: Path = field(compare=False)

    def load(self) -> dict[str, Any]:
        try:
            document = yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ReleaseError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(document, dict):
            raise ReleaseError(f"{self.path} is not an OpenAPI document")
        return document


@dataclass(frozen=True)
class Verdict:
    """The code's document judged against the last released one."""

    release: Release | None
    version: Version
    breaks: list[str]

    @property
    def new_major(self) -> bool:
        """A major bump may break; the previous major must then still be served."""
        return self.release is not None and self.version[0] > self.release.version[0]

    @property
    def passed(self) -> bool:
        return not self.breaks or self.new_major


def parse_version(text: object) -> Version:
    match = _VERSION.match(str(text))
    if match is None:
        raise ReleaseError(f"info.version {text!r} is not a MAJOR.MINOR.PATCH version")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def document_version(document: Mapping[str, Any]) -> Version:
    return parse_version((document.get("info") or {}).get("version"))


def releases(directory: Path) -> list[Release]:
    """The released documents in ``directory``, oldest first; other files are ignored."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _RELEASED_NAME.match(path.name)
        if match:
            found.append(Release(parse_version(match.group(1)), path))
    return sorted(found)


def last_release(directory: Path) -> Release | None:
    found = releases(directory)
    return found[-1] if found else None


def judge(document: Mapping[str, Any], directory: Path) -> Verdict:
    """Compare the code's document with the newest release in ``directory``."""
    version = document_version(document)
    release = last_release(directory)
    if release is None:
        return Verdict(None, version, [])
    return Verdict(release, version, breaking_changes(release.load(), document))


def release(text: str, directory: Path) -> Path:
    """Keep ``text`` (a rendered document) as the release of its ``info.version``."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ReleaseError("the document to release is not an OpenAPI document")
    version = document_version(document)
    latest = last_release(directory)
    if latest is not None and version < latest.version:
        raise ReleaseError(f"info.version {_dotted(version)} is older than {latest.path.name}")
    target = directory / f"openapi-{_dotted(version)}.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # Exclusive create: a released document is never overwritten, even by a race.
        with target.open("x") as out:
            out.write(text)
    except FileExistsError:
        raise ReleaseError(
            f"{target} exists; a released document never changes: bump info.version"
        ) from None
    return target


def iter_lines(verdict: Verdict) -> Iterator[str]:
    """The verdict as lines for a person: one per break, then what to do about it."""
    prefix = "warning" if verdict.new_major else "breaking"
    for line in verdict.breaks:
        yield f"{prefix}: {line}"
    if not verdict.breaks or verdict.release is None:
        return
    released = verdict.release.path
    if verdict.new_major:
        previous = verdict.release.version[0]
        yield (
            f"note: info.version {_dotted(verdict.version)} is a new major; the previous "
            f"major (v{previous}, as released in {released}) must still be served for two "
            "majors"
        )
    else:
        yield (
            f"hint: these break clients of {released}; make the change additive (new "
            "optional fields, new paths), or bump the major of info.version "
            "(dockyard/api/openapi.py API_VERSION) and keep serving the previous major"
        )


def _dotted(version: Version) -> str:
    return ".".join(str(part) for part in version)
