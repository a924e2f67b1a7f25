"""Durations as the API server spells them: Go's ``time.Duration`` strings (``72h``, ``1h30m``).

Manifests say how long something lasts the way ``kubectl`` and CEL's ``duration()`` do,
not in ISO 8601 (which is what pydantic would make of a ``timedelta``). This module owns
the accepted subset (hours, minutes and seconds, each optionally fractional) and its
conversion to ``timedelta``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

# Hours, minutes and seconds only: a lifetime or interval in milliseconds makes no sense
# for the objects that use this, and every string it accepts is one CEL can parse too.
GO_DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """``text`` (``"72h"``, ``"1h30m"``, ``"1.5h"``, ``"45s"``) as a ``timedelta``.

    Raises ``ValueError`` for anything ``GO_DURATION_PATTERN`` does not accept, and for
    a duration beyond ``timedelta``'s range (about 2.7 million years).
    """
    if not re.fullmatch(GO_DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 72h, 1h30m or 45s")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any duration can be") from None
