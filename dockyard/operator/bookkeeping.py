"""Where Kopf keeps its progress and last-handled configuration: annotations, each read
only by the object they were written for.

Our CRDs declare their status schema, so Kopf's own bookkeeping goes to annotations
(``status.kopf`` would be pruned by the apiserver), under a prefix of its own: Kopf
leaves every annotation under its storage prefix out of the diffs it reacts to, and
users' ``dockyard.io/*`` annotations (approved-by, run-now) must be seen.

Kopf writes that bookkeeping by name, after a pass. A pass still at work when its object
is deleted (one with no finalizer: a Restore, a Webhook, a schedule, a policy) and made
again under the name writes the first object's into the second: a last-handled
configuration equal to the new spec makes the new object look handled already (no
handler runs for it), and a purged progress record drops a retry it had scheduled.
So every write of the bookkeeping names the uid it is for (``WRITTEN_FOR``), and
bookkeeping written for another uid reads as none: Kopf then sees the object as new
and its handlers run (they are idempotent). Objects written by an operator before this
one carry no uid and read as before.
"""

from __future__ import annotations

from typing import Final

import kopf

PREFIX: Final = "operator.dockyard.io"
WRITTEN_FOR: Final = f"{PREFIX}/written-for"
"""The annotation naming the uid of the object Kopf's bookkeeping was written for."""


def of_another(body: kopf.Body) -> bool:
    """Whether the bookkeeping ``body`` carries was written for another object."""
    written_for = body.metadata.annotations.get(WRITTEN_FOR)
    return written_for is not None and written_for != body.metadata.uid


def _mark(body: kopf.Body, patch: kopf.Patch) -> None:
    if body.metadata.uid:
        patch.metadata.annotations[WRITTEN_FOR] = body.metadata.uid


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """Kopf's handler progress, for the object it was written for."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX)

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return None if of_another(body) else super().fetch(key=key, body=body)

    def store(
        self,
        *,
        key: kopf.HandlerId,
        record: kopf.ProgressRecord,
        body: kopf.Body,
        patch: kopf.Patch,
    ) -> None:
        super().store(key=key, record=record, body=body, patch=patch)
        _mark(body, patch)


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's last-handled configuration, for the object it was written for."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-configuration")

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None if of_another(body) else super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        super().store(body=body, patch=patch, essence=essence)
        _mark(body, patch)
