"""Test bed only: end the process at a named point, as a crash would.

Off unless ``DOCKYARD_TESTBED_EXIT_AT`` names the point; nothing sets it outside the
tests that check what recovery does after a crash at that point
(``tests/integration/test_restore_switch_over.py``). The exit skips every ``finally``
and cleanup, like SIGKILL.
"""

from __future__ import annotations

import os
from typing import Final

ENV: Final = "DOCKYARD_TESTBED_EXIT_AT"
EXIT_CODE: Final = 86

SWITCH_OVER_REFUSED: Final = "switch-over:connections-refused"
"""After a switch-over refused connections to the databases, before the renames."""
SWITCH_OVER_RENAMED: Final = "switch-over:renamed"
"""After a switch-over's renames committed, before connections are allowed again."""

SWITCH_OVER_DONE: Final = "switch-over:done"
"""After a restore's switch-over completed, before its Completed status is written."""
RESTORE_COMPLETED: Final = "restore:completed"
"""After a restore's Completed status is written, before its retired database is dropped."""


def exit_here(point: str) -> None:
    """Exit the process at once if the test bed asked to crash at ``point``."""
    if os.environ.get(ENV) == point:
        os._exit(EXIT_CODE)


__all__ = [
    "ENV",
    "EXIT_CODE",
    "RESTORE_COMPLETED",
    "SWITCH_OVER_DONE",
    "SWITCH_OVER_REFUSED",
    "SWITCH_OVER_RENAMED",
    "exit_here",
]
