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
handler runs for it), and a progress record of the first object's handler passes for
the new one's (its retries, its delay).

So every record (each handler's progress, the last-handled configuration) carries the
uid it was written for (``UID_FIELD``), and a record of another uid reads as none: Kopf
then sees the object as new and its handlers run (they are idempotent). The uid is in
each record, not in one annotation beside them, since Kopf's patches of the two objects
can land in either order and mix their records. Records written by an operator before
this one carry no uid and read as before.

What a storage cannot prevent: the old object's pass purging, by name, the new one's
progress record of the same handler. The new object's handler then starts afresh (its
retries and delay reset), which its idempotence allows. An older operator rolled back
to sees the uid as a change once: one update pass per object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

import kopf

from dockyard.core.models.common import OPERATOR_ANNOTATIONS

PREFIX: Final = OPERATOR_ANNOTATIONS
UID_FIELD: Final = "writtenFor"
"""The field of each stored record naming the uid of the object it was written for."""


def _own(record: dict[str, Any] | None, body: kopf.Body) -> dict[str, Any] | None:
    """``record`` without its uid, or ``None`` when it was written for another object."""
    if record is None:
        return None
    record = dict(record)
    written_for = record.pop(UID_FIELD, None)
    return None if written_for not in (None, body.metadata.uid) else record


def _stamped(record: Mapping[str, Any], body: kopf.Body) -> dict[str, Any]:
    return {**record, UID_FIELD: body.metadata.uid} if body.metadata.uid else dict(record)


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """Kopf's handler progress, each record for the object it was written for."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX)

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        found = super().fetch(key=key, body=body)
        return cast(kopf.ProgressRecord | None, _own(cast(dict[str, Any] | None, found), body))

    def store(
        self,
        *,
        key: kopf.HandlerId,
        record: kopf.ProgressRecord,
        body: kopf.Body,
        patch: kopf.Patch,
    ) -> None:
        stamped = cast(kopf.ProgressRecord, _stamped(record, body))
        super().store(key=key, record=stamped, body=body, patch=patch)


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's last-handled configuration, for the object it was written for."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-configuration")

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        found = super().fetch(body=body)
        return cast(kopf.BodyEssence | None, _own(cast(dict[str, Any] | None, found), body))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        stamped = cast(kopf.BodyEssence, _stamped(essence, body))
        super().store(body=body, patch=patch, essence=stamped)
