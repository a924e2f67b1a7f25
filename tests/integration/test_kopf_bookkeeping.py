"""Kopf's bookkeeping is read only by the object it was written for, with the session's
operator: Kopf writes its progress and last-handled configuration by name, so a pass
still at work when its object is deleted and made again under the name leaves the first
object's bookkeeping on the second. The new object is handled as new all the same.

A Webhook stands for every kind without a finalizer (Restores, schedules, policies):
its one handler answers with a Ready condition, even for a Secret that is missing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard.operator.bookkeeping import PREFIX, UID_FIELD
from tests.conftest import Kubectl, get_json, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")


def _webhook(namespace: str, **annotations: str) -> str:
    return json.dumps({
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "hook", "namespace": namespace, "annotations": annotations},
        "spec": {
            "url": "https://hooks.example.com/dockyard",
            "events": ["*"],
            "secretRef": {"name": "absent", "key": "secret"},
        },
    })  # fmt: skip


LAST_HANDLED = f"{PREFIX}/last-handled-configuration"


def _handled(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    """The Webhook, once its handler has answered with a Ready condition and Kopf has
    recorded it handled, for this Webhook."""
    hook: dict[str, Any] = get_json(kubectl, "webhook", "hook", "-n", namespace)
    conditions = (hook.get("status") or {}).get("conditions") or []
    recorded = (hook["metadata"].get("annotations") or {}).get(LAST_HANDLED)
    if not recorded or not any(c["type"] == "Ready" for c in conditions):
        return None
    return hook if json.loads(recorded).get(UID_FIELD) == hook["metadata"]["uid"] else None


def test_kopfs_bookkeeping_for_an_earlier_object_of_the_name_does_not_mark_the_new_one_handled(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "-f", "-", input=_webhook(namespace))
    first: dict[str, Any] = wait_for(lambda: _handled(kubectl, namespace), timeout=30)  # type: ignore[assignment]
    meta = first["metadata"]
    left = {k: v for k, v in meta["annotations"].items() if k.startswith(f"{PREFIX}/")}
    assert json.loads(left[LAST_HANDLED])[UID_FIELD] == meta["uid"]

    # What a pass of the first one writes by name once the second is there: the same
    # spec, marked handled.
    kubectl("delete", "webhook", "hook", "-n", namespace)
    kubectl("create", "-f", "-", input=_webhook(namespace, **left))

    # Handled, and recorded handled, as the new Webhook it is.
    again: dict[str, Any] = wait_for(lambda: _handled(kubectl, namespace), timeout=30)  # type: ignore[assignment]
    assert again["metadata"]["uid"] != meta["uid"]
