"""The levels of Kopf's own log lines: routine ones and the expected noise go down.

- ``QuietRoutine``: Kopf says "Timer 'drift-repair' succeeded." at INFO for every
  environment on every tick, and the same for every child's status event and index
  update: an idle operator would log a line per object every few seconds. Those go to
  DEBUG; failures, and the outcome of creations, updates and deletions, stay as Kopf
  logs them.
- ``QuietGoneNamespaces``: when a namespace is deleted, its objects' finalizers still
  post Events (a Backup's artifacts deleted, a drill's scratch database dropped), and
  the apiserver refuses every one: the namespace is terminating (403), then gone (404).
  Kopf retries each post for about a minute and logs every attempt at ERROR, so that
  one ``kubectl delete namespace`` filled the log with errors that nobody can act on.
  The attempts go to DEBUG; the post given up is one INFO line.

Kopf formats its messages itself (no ``args``), so they are told apart by their text;
a line that does not match keeps Kopf's level.
"""

from __future__ import annotations

import logging
import re
from typing import Final

KOPF_OBJECTS: Final = "kopf.objects"
KOPF_POSTING: Final = "kopf._core.engines.posting"

_ROUTINE = re.compile(r"^(Timer '[^']+'|Handler '[^']+-changed'|Indexer '[^']+') succeeded\.$")
# An Events POST refused because its namespace is terminating, or found gone.
_EVENT_POST = re.compile(
    r"^Request attempt #?\d+(/\d+)? failed; (will retry|escalating): POST \S+/events "
)
_GONE = re.compile(r"NamespaceTerminating|Code: 404\. Message: namespaces \"[^\"]+\" not found")
_GIVEN_UP = "Failed to post an event."


def _lower(record: logging.LogRecord, level: int) -> bool:
    record.levelno, record.levelname = level, logging.getLevelName(level)
    return logging.getLogger(record.name).isEnabledFor(level)


class QuietRoutine(logging.Filter):
    """Kopf's per-object "succeeded" lines of timers, indexers and child events, to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _ROUTINE.match(record.getMessage()):
            return True
        return _lower(record, logging.DEBUG)


class QuietGoneNamespaces(logging.Filter):
    """Kopf's Event posts into a terminating or deleted namespace: attempts to DEBUG, the
    post given up to INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno <= logging.INFO or not _GONE.search(message):
            return True
        if record.levelno == logging.ERROR and _EVENT_POST.match(message):
            return _lower(record, logging.DEBUG)
        if record.levelno == logging.WARNING and message.startswith(_GIVEN_UP):
            return _lower(record, logging.INFO)
        return True


def install() -> None:
    """Put the filters on Kopf's loggers (once per process: ``run`` calls it)."""
    logging.getLogger(KOPF_OBJECTS).addFilter(QuietRoutine())
    logging.getLogger(KOPF_POSTING).addFilter(QuietGoneNamespaces())
