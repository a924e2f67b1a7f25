"""Whether a Restore's approval counts: the decision of ``decide_approval``, and the
operator's own check that the approver holds the ``approve`` verb.

The ValidatingAdmissionPolicy in ``manifests/restore-approval-policy.yaml`` already
refuses an ``dockyard.io/approved-by`` annotation that is not written by the user it
names, by a user allowed ``approve`` on the restore, once the restore is
AwaitingApproval. The operator does not rely on it being installed: before it acts on a
new approval it asks a SubjectAccessReview whether the named user may ``approve`` this
restore, and refuses it with the ``Approved`` condition otherwise. The annotation carries
only a name; ``dockyard.io/approver-groups`` (written with the approval, pinned by the
same policy to the writer's own groups, set by the REST API's approve) adds the groups
through which an approver may hold the verb. Without the policy the names are claims,
so the review proves the named user *may* approve, not that they wrote the annotation:
install the policy (``docs/rbac.md``). A ``system:`` group other than
``system:authenticated`` is never forwarded, policy or not: those are the
authenticators' (``system:masters`` passes every review), so naming one in the
annotation would let a claim pass for the most powerful identity of any cluster.

An approval written before the restore was AwaitingApproval is refused too: nobody had
seen the plan it would approve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from dockyard.core.kube import KubeClient
from dockyard.core.models.environment import Tier
from dockyard.core.models.restore import (
    APPROVED_BY_ANNOTATION,
    APPROVER_GROUPS_ANNOTATION,
    Restore,
    RestorePhase,
)
from dockyard.core.restore_plan import (
    ApprovalDecision,
    ApprovalState,
    decide_approval,
    identify_requester,
    refuse_without_right,
)

REVIEWS: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
# Every user who can write an annotation is authenticated; RBAC bindings to this group
# count for an approver as they would in the apiserver.
AUTHENTICATED: Final = "system:authenticated"
# Groups the authenticators give (system:masters, system:nodes, system:serviceaccounts...),
# never Dockyard's own. One named in the annotation is a claim a tenant can write when the
# policy is not installed, and system:masters passes any review unchecked: only
# AUTHENTICATED of them is ever forwarded.
SYSTEM_GROUP_PREFIX: Final = "system:"
_MAX_GROUPS: Final = 64


@dataclass(frozen=True, slots=True)
class Review:
    """The apiserver's answer on whether a user may approve a restore."""

    allowed: bool
    reason: str


def forwardable(group: str) -> bool:
    """Whether an approver's review may include ``group``: not a ``system:`` group, other
    than ``system:authenticated``."""
    return group == AUTHENTICATED or not group.startswith(SYSTEM_GROUP_PREFIX)


def approver_groups(annotations: Mapping[str, str]) -> tuple[str, ...]:
    """The groups ``dockyard.io/approver-groups`` names that may be forwarded, plus
    ``system:authenticated``."""
    listed = annotations.get(APPROVER_GROUPS_ANNOTATION, "")
    named = (g.strip() for g in listed.split(","))
    groups = [g for g in named if g and forwardable(g)][:_MAX_GROUPS]
    return tuple(dict.fromkeys([*groups, AUTHENTICATED]))


def approval_review(
    *, namespace: str, name: str, user: str, groups: Sequence[str]
) -> dict[str, Any]:
    """The SubjectAccessReview asking whether ``user`` may ``approve`` Restore
    ``namespace/name`` through ``groups``, of which only the forwardable are sent."""
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": list(dict.fromkeys(g for g in groups if forwardable(g))),
            "resourceAttributes": {
                "group": "dockyard.io",
                "resource": "restores",
                "verb": "approve",
                "namespace": namespace,
                "name": name,
            },
        },
    }


async def review_approver(
    kube: KubeClient, *, namespace: str, name: str, user: str, groups: Sequence[str]
) -> Review:
    """Whether ``user`` (in ``groups``) may ``approve`` Restore ``namespace/name``."""
    review = await kube.create(
        REVIEWS, approval_review(namespace=namespace, name=name, user=user, groups=groups)
    )
    status = review.get("status") or {}
    return Review(bool(status.get("allowed")), str(status.get("reason") or ""))


async def judge_approval(
    kube: KubeClient, raw: Mapping[str, Any], restore: Restore, tier: Tier
) -> ApprovalDecision:
    """Whether ``restore`` (into an environment of ``tier``) may touch its target."""
    meta = restore.metadata
    namespace, name = meta.namespace or "", meta.name or ""
    approved_by = (meta.annotations.get(APPROVED_BY_ANNOTATION) or "").strip() or None
    previous = restore.status.approval
    accepted = previous is not None and previous.approved_by == approved_by
    decision = decide_approval(
        target_tier=tier,
        requester=identify_requester(
            meta.annotations, raw.get("metadata", {}).get("managedFields") or ()
        ),
        approved_by=approved_by,
        approved_at=previous.approved_at
        if accepted and previous is not None
        else datetime.now(UTC),
        shown=accepted or restore.status.phase is RestorePhase.AWAITING_APPROVAL,
        refused_approver=previous.refused_approver if previous is not None else None,
    )
    # Reviewed once, when it was first accepted: only an approval status records was
    # reviewed. A restore that started without one (its target was not production then)
    # may need one now (``approval_tier``), and that one is reviewed like any other.
    if decision.state is not ApprovalState.APPROVED or approved_by is None or accepted:
        return decision
    review = await review_approver(
        kube,
        namespace=namespace,
        name=name,
        user=approved_by,
        groups=approver_groups(meta.annotations),
    )
    if review.allowed:
        return decision
    return refuse_without_right(
        decision, approver=approved_by, namespace=namespace, detail=review.reason
    )


__all__ = [
    "Review",
    "approval_review",
    "approver_groups",
    "forwardable",
    "judge_approval",
    "review_approver",
]
