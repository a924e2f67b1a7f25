"""Rejecting a restore that awaits approval: the decision, a pure function.

An approver who will not approve a restore's plan rejects it: the
``dockyard.io/rejected-by`` annotation names them (the REST API's ``reject`` writes it
as the caller, and the ValidatingAdmissionPolicy of ``manifests/restore-approval-policy.yaml``
makes it proof: written by the user it names, who holds the ``approve`` verb on the
restore, while the restore is AwaitingApproval), with ``dockyard.io/rejection-reason``
beside it. The operator then fails the restore, reason ``Rejected``, and records who and
why in ``status.approval``; the target is never touched.

A rejection counts only while the restore awaits approval: once it was approved (or
needed none) the restore is under way, and an annotation written then is ignored (the
policy refuses it). Where both annotations arrive together, the rejection wins. The
operator does not review the rejecter as it reviews an approver: a rejection only stops
a restore, which whoever may patch a Restore may also delete.

The reason is the rejecter's free text, shown in status and by ``kubectl``: it is kept
to one line of printable characters, at most ``REJECTION_REASON_MAX_LENGTH`` long.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from dockyard.core.models.restore import (
    REJECTED_BY_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
    REJECTION_REASON_MAX_LENGTH,
    USER_MAX_LENGTH,
    RestoreApproval,
)
from dockyard.core.restore_plan import ApprovalDecision, ApprovalState


def one_line(text: str, limit: int) -> str:
    """``text`` as one line of printable characters (white space folded), cut to ``limit``."""
    folded = " ".join(text.split())
    return "".join(c for c in folded if c.isprintable())[:limit]


def decide_rejection(
    *,
    awaiting: bool,
    annotations: Mapping[str, str],
    approval: RestoreApproval | None,
    now: datetime,
) -> ApprovalDecision | None:
    """The restore rejected, when it is ``awaiting`` approval and
    ``dockyard.io/rejected-by`` names someone; None when it is not rejected."""
    rejecter = one_line(annotations.get(REJECTED_BY_ANNOTATION) or "", USER_MAX_LENGTH)
    if not awaiting or not rejecter:
        return None
    reason = one_line(
        annotations.get(REJECTION_REASON_ANNOTATION) or "", REJECTION_REASON_MAX_LENGTH
    )
    record = (approval or RestoreApproval()).model_copy(
        update={"rejected_by": rejecter, "rejected_at": now, "rejection_reason": reason or None}
    )
    why = f"rejected by {rejecter}" + (f": {reason}" if reason else "")
    return ApprovalDecision(ApprovalState.REJECTED, why, record)


__all__ = ["decide_rejection", "one_line"]
