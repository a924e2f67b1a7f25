"""Names and label values made from other objects' names, kept within Kubernetes' limits.

A Backup's or a RestoreDrill's name may be 253 characters long, but a label value holds
at most 63, and so does a Job's name (its Pods carry it in the ``job-name`` label).
Cutting a long name to fit is not enough: two names that share their first 63
characters would become one, and a drill's run number at the end of its Job's name
would be cut off, so that its next run finds the last run's Job. ``fitted`` cuts, then
ends what it kept with a digest of the whole; a name that fits is left as it is.
"""

from __future__ import annotations

import hashlib
from typing import Final

LABEL_VALUE_MAX: Final = 63
"""The longest label value (and the longest Job name, for its Pods' ``job-name``)."""
OBJECT_NAME_MAX: Final = 253
"""The longest name of most objects (a DNS-1123 subdomain)."""
DIGEST_LENGTH: Final = 8
"""Hex digits of SHA-256 that stand for the part of a long name that was cut."""


def fitted(text: str, limit: int, *, suffix: str = "") -> str:
    """``text + suffix`` when it is at most ``limit`` characters long; otherwise the
    beginning of ``text``, ``-``, the first ``DIGEST_LENGTH`` hex digits of the SHA-256 of
    all of ``text``, then ``suffix``: exactly ``limit`` characters or fewer, and different
    for two texts that differ anywhere.

    ``text`` starts with a letter or digit (names do); the cut end is stripped of ``-``,
    ``.`` and ``_`` so the result stays a valid name or label value.
    """
    whole = text + suffix
    if len(whole) <= limit:
        return whole
    digest = hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]
    room = limit - len(suffix) - DIGEST_LENGTH - 1
    if room < 1:
        raise ValueError(f"no room for a name within {limit} characters with suffix {suffix!r}")
    return f"{text[:room].rstrip('-._')}-{digest}{suffix}"


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it fits in 63 characters, else ``fitted``.

    Select by it with the same function: ``-l dockyard.io/backup-schedule=<label_value>``.
    """
    return fitted(name, LABEL_VALUE_MAX)


__all__ = ["DIGEST_LENGTH", "LABEL_VALUE_MAX", "OBJECT_NAME_MAX", "fitted", "label_value"]
