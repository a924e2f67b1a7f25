"""Structured JSON logging, with the request id and the trace id of whatever is running.

The ids live in context variables, so every log line written while a request (or a
reconcile) is handled carries them without being passed around by hand.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dockyard_request_id", default=None
)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dockyard_trace_id", default=None
)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_RESERVED = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
    # Kopf attaches its whole settings object to every line; the object reference stays.
    | {"settings", "k8s_skip"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id = trace_id_var.get()
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr in the chosen format; safe to call twice."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


LOG_EVERY_SECONDS: Final = 10.0
# Keys an EventSampler holds at most; past them, new keys share OVERFLOW_KEY.
SAMPLED_KEYS: Final = 10_000
OVERFLOW_KEY: Final = "(keys over the sampler's capacity)"
_SWEEP_EVERY_SECONDS: Final = 1.0
# What a logged header value keeps of what a client sent (an Origin of 8 KB, say).
LOGGED_VALUE_MAX: Final = 256


@dataclass
class EventSampler:
    """Lets one log line per key through every ``every`` seconds: for lines a client can
    cause at will (a refused preflight, a throttled request), so that logging them costs
    less than sending them.

    Bounded, as clients choose the keys (an address group: an IPv6 /48 holds 65,536
    /64s): it holds at most ``capacity`` keys. When a new key finds it full, keys quiet
    for ``every`` seconds are swept, at most once a second, so that a flood of new keys
    costs no sweep per line; while it stays full, every new key shares one key,
    ``OVERFLOW_KEY``: one line per ``every`` seconds for all of them together.
    """

    every: float = LOG_EVERY_SECONDS
    capacity: int = SAMPLED_KEYS
    _last: dict[str, float] = field(default_factory=dict)
    _swept_at: float = float("-inf")

    def due(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if key not in self._last and len(self._last) >= self.capacity:
            if now - self._swept_at >= _SWEEP_EVERY_SECONDS:
                self._last = {k: t for k, t in self._last.items() if now - t < self.every}
                self._swept_at = now
            if len(self._last) >= self.capacity:
                key = OVERFLOW_KEY
        if now - self._last.get(key, float("-inf")) < self.every:
            return False
        self._last[key] = now
        return True

    @property
    def held(self) -> int:
        """Keys held: what the sampler's memory grows with."""
        return len(self._last)


def clipped(value: str, limit: int = LOGGED_VALUE_MAX) -> str:
    """``value`` as a log line or a message may show it: at most ``limit`` characters."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


def security_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    """Log a security event (authentication, authorization, limits) in one greppable shape."""
    # LogRecord refuses extras that shadow its own attributes ("name", "msg", ...).
    safe = {f"{k}_" if k in _RESERVED else k: v for k, v in fields.items()}
    logger.warning(event, extra={"security_event": event, **safe})
