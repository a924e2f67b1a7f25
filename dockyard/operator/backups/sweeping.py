"""Leftovers of interrupted runs: partial files and abandoned multipart uploads.

A run killed mid-write (an operator process or a runner pod killed, a node lost)
leaves a hidden ``.partial`` file on a filesystem store or an incomplete multipart
upload in a bucket; neither is ever an artifact (commits are atomic), but both take
space. Each inline backup sweeps its storage before it writes: whatever is older than
any run still alive could be (``DOCKYARD_RUN_DEADLINE``, a Job's
``activeDeadlineSeconds`` too, plus ``DOCKYARD_STALE_PARTIAL_MARGIN``, an hour by
default) belongs to a dead run and is
removed. The sweep is best effort: a store that refuses the listing (a bucket policy
without ``s3:ListBucketMultipartUploads``) does not fail the backup.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from dockyard.core.settings import Settings
from dockyard.runner import BackupError, Store

logger = logging.getLogger(__name__)


def stale_after(settings: Settings) -> timedelta:
    """How old a partial must be before no live run can own it."""
    return timedelta(seconds=settings.run_deadline + settings.stale_partial_margin)


async def sweep(storage: Store, settings: Settings) -> int:
    """Remove ``storage``'s partials older than :func:`stale_after`; how many went."""
    try:
        return await storage.remove_stale_partials(stale_after(settings))
    except BackupError as exc:
        logger.warning(
            "stale partials not swept", extra={"storage": repr(storage), "error": exc.message}
        )
        return 0
