"""``kubectl dockyard restore approve|reject``: the second person's answer to a plan.

Both show the Restore's plan, refuse at once what the apiserver would refuse anyway (a
restore that is not AwaitingApproval, an approval by its requester), ask (unless
``--yes``), then write the answer's annotations as the user, as the REST API does:
``dockyard.io/approved-by``, or ``dockyard.io/rejected-by`` with
``dockyard.io/rejection-reason``. The ValidatingAdmissionPolicy
(``manifests/restore-approval-policy.yaml``) holds either to the user who writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dockyard.core.kube import KubeError
from dockyard.core.models.restore import (
    APPROVED_BY_ANNOTATION,
    REJECTED_BY_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
    REJECTION_REASON_MAX_LENGTH,
    REQUESTED_BY_ANNOTATION,
)
from dockyard.core.resources import RESTORES
from dockyard.core.restore_rejection import one_line
from dockyard.plugin import views
from dockyard.plugin.commands import Object, PluginError, Session, phase_of


async def restore_approve(
    session: Session, name: str, *, yes: bool, confirm: Callable[[str], bool]
) -> int:
    restore, me = await _awaiting(session, name)
    annotations = restore["metadata"].get("annotations") or {}
    if annotations.get(REQUESTED_BY_ANNOTATION) == me:
        raise PluginError(f"you ({me}) requested restore {name}; another user must approve it")
    if not yes and not confirm(f"Approve restore {name} as {me}?"):
        raise PluginError("not approved")
    await _answer_as_shown(session, restore, {APPROVED_BY_ANNOTATION: me}, "approved")
    session.console.print(f"restore {name} approved by {me}")
    return 0


async def restore_reject(
    session: Session,
    name: str,
    *,
    reason: str | None,
    yes: bool,
    confirm: Callable[[str], bool],
) -> int:
    said = one_line(reason or "", REJECTION_REASON_MAX_LENGTH + 1)
    if len(said) > REJECTION_REASON_MAX_LENGTH:
        raise PluginError(f"keep --reason to {REJECTION_REASON_MAX_LENGTH} characters")
    restore, me = await _awaiting(session, name)
    if not yes and not confirm(f"Reject restore {name} as {me}?"):
        raise PluginError("not rejected")
    answer = {REJECTED_BY_ANNOTATION: me, REJECTION_REASON_ANNOTATION: said or None}
    await _answer_as_shown(session, restore, answer, "rejected")
    session.console.print(f"restore {name} rejected by {me}; the operator fails it")
    return 0


async def _awaiting(session: Session, name: str) -> tuple[Object, str]:
    """The Restore ``name``, its plan shown, if it awaits approval; and who you are."""
    restore = await session.need(RESTORES, name)
    session.console.print(views.restore_plan(restore))
    phase = phase_of(restore)
    if phase != "AwaitingApproval":
        raise PluginError(f"restore {name} is {phase or 'not planned yet'}, not AwaitingApproval")
    rejecter = (restore["metadata"].get("annotations") or {}).get(REJECTED_BY_ANNOTATION)
    if rejecter:
        raise PluginError(f"restore {name} was rejected by {rejecter}; it fails")
    me = await session.kube.own_username()
    if not me:
        raise PluginError("the apiserver did not say who you are (SelfSubjectReview refused)")
    return restore, me


def _as_shown(restore: Object) -> tuple[Any, ...]:
    """What an answer vouches for: the object (by uid), its spec and its plan."""
    return (
        restore["metadata"].get("uid"),
        restore.get("spec"),
        (restore.get("status") or {}).get("plan"),
    )


async def _answer_as_shown(
    session: Session, shown: Object, annotations: Mapping[str, str | None], verb: str
) -> None:
    """Write ``annotations`` on the Restore that was shown, and only while it still is
    what was shown.

    The patch carries the resourceVersion that was read: a Restore deleted and made
    again under the name (another plan, no safety backup) while the question was open
    is refused with 409, not answered. A write that changed neither its spec nor its
    plan (the operator's status) is read past."""
    name = shown["metadata"]["name"]
    current = shown
    for _ in range(5):
        version = current["metadata"].get("resourceVersion")
        patch = {"metadata": {"resourceVersion": version, "annotations": dict(annotations)}}
        try:
            await session.kube.merge_patch(RESTORES.path(session.namespace, name), patch)
            return
        except KubeError as exc:
            if exc.status in (403, 422):
                raise PluginError(f"not {verb}: {exc.message}") from None
            if exc.status != 409:
                raise
        current = await session.need(RESTORES, name)
        if _as_shown(current) != _as_shown(shown):
            raise PluginError(
                f"restore {name} changed while you were asked (another object, spec or "
                f"plan): not {verb}; run the command again to see what it is now"
            )
    raise PluginError(f"restore {name} keeps changing; not {verb}, try again")


__all__ = ["restore_approve", "restore_reject"]
