"""How a failure on the managed server reaches the operator: a reason and a safe message.

Every failure to use the server becomes a :class:`ManagedDatabaseError` whose ``reason``
fits a condition (``ServerUnreachable``, ``AuthenticationFailed``, ...) and whose
``message`` names no secret: the admin's password and any password in play are
redacted from the driver's text before it can reach a status condition or a log.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import asyncpg

from dockyard.core.redaction import redact


class UnavailableReason(StrEnum):
    """Why the managed server could not be used; each is a condition ``reason``."""

    SERVER_UNREACHABLE = "ServerUnreachable"
    SERVER_NOT_READY = "ServerNotReady"
    TOO_MANY_CONNECTIONS = "TooManyConnections"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    INVALID_CONFIGURATION = "InvalidConfiguration"


# How each failure to use the server reads; the first match wins, so the more specific
# classes come first (TimeoutError is an OSError, every asyncpg error an Exception).
_UNAVAILABLE: tuple[tuple[tuple[type[BaseException], ...], UnavailableReason, str], ...] = (
    (
        (asyncpg.InvalidAuthorizationSpecificationError,),
        UnavailableReason.AUTHENTICATION_FAILED,
        "{where} refused the login",
    ),
    (
        (asyncpg.InsufficientPrivilegeError,),
        UnavailableReason.PERMISSION_DENIED,
        "the admin lacks a privilege on {where}",
    ),
    (
        (asyncpg.TooManyConnectionsError,),
        UnavailableReason.TOO_MANY_CONNECTIONS,
        "{where} has no free connection",
    ),
    (
        (asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError),
        UnavailableReason.SERVER_NOT_READY,
        "{where} is starting or stopping",
    ),
    (
        (asyncpg.ClientConfigurationError,),
        UnavailableReason.INVALID_CONFIGURATION,
        "cannot connect to {where} as configured",
    ),
    ((TimeoutError,), UnavailableReason.SERVER_UNREACHABLE, "{where} did not answer in time"),
    (
        (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError),
        UnavailableReason.SERVER_UNREACHABLE,
        "cannot reach {where}",
    ),
)


class ManagedDatabaseError(Exception):
    """A failure on the managed server; ``reason`` is CamelCase, ``message`` is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DatabaseUnavailable(ManagedDatabaseError):
    """The server is unreachable, not ready, or refuses the admin's credentials or rights."""


class DatabaseOperationFailed(ManagedDatabaseError):
    """The server answered but a statement failed (a concurrent drop, a dependent object)."""


def translate(exc: BaseException, where: str, hidden: Iterable[str]) -> ManagedDatabaseError:
    """``exc``, raised while using ``where``, as the error the operator reports."""
    # A timeout's text is empty or asyncpg's internals; its class name says enough.
    detail = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
    # Belt and braces: neither asyncpg nor PostgreSQL echo passwords, but a message
    # that ever did must not carry one into a status condition or a log.
    detail = redact(detail or type(exc).__name__, *hidden)
    for kinds, reason, what in _UNAVAILABLE:
        if isinstance(exc, kinds):
            return DatabaseUnavailable(reason.value, f"{what.format(where=where)}: {detail}")
    sqlstate = getattr(exc, "sqlstate", None) or "?????"
    return DatabaseOperationFailed(
        "OperationFailed", f"a statement failed on {where} (SQLSTATE {sqlstate}): {detail}"
    )
