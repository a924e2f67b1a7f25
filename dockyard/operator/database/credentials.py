"""The logins of environment roles: their passwords, verifiers and connection details.

Passwords are made here (:func:`generate_password`) and never travel in SQL: a role's
password is set from the SCRAM-SHA-256 verifier computed here
(:func:`scram_sha256_verifier`), so statement logs, ``pg_stat_statements`` and error
messages on the server can at most show a salted hash. Nothing here prints a password
in its ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

# secrets.token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-]: 256 bits, and safe
# in a URI, an environment variable or a shell without quoting.
_PASSWORD_BYTES = 32
_MAX_PASSWORD_CHARS = 1024
# PostgreSQL's own default for SCRAM verifiers (scram_iterations).
_SCRAM_ITERATIONS = 4096
_SCRAM_SALT_BYTES = 16


@dataclass(frozen=True)
class DatabaseCredentials:
    """What an environment's workload needs to reach its database: the Secret's content.

    ``sslmode`` is the managed server URL's (``DOCKYARD_MANAGED_POSTGRES_URL``), so a
    workload and a runner Job never fall back to plaintext where the operator would not;
    ``verify-ca`` and ``verify-full`` become ``require`` (``tenant_sslmode``). Its other
    TLS settings are not carried over: ``sslrootcert``, ``sslcert``, ``sslkey`` and
    ``sslcrl`` name files in the operator's pod (the client certificate is the admin's),
    and the rest are not understood by every client library. A workload that verifies
    the server brings the CA itself (libpq's default ``~/.postgresql/root.crt``, with
    which ``require`` verifies as ``verify-ca`` does, or ``PGSSLROOTCERT``).
    """

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    sslmode: str | None = None

    def uri(self) -> str:
        """``postgresql://user:password@host:port/database[?sslmode=...]``, each part
        URL-quoted."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        query = f"?sslmode={quote(self.sslmode, safe='')}" if self.sslmode else ""
        database = quote(self.database, safe="")
        return f"postgresql://{user}:{password}@{host}:{self.port}/{database}{query}"

    def secret_data(self) -> dict[str, str]:
        """The Secret's ``stringData``, with the key names most client libraries expect."""
        return {
            "host": self.host,
            "port": str(self.port),
            "database": self.database,
            "username": self.user,
            "password": self.password,
            "uri": self.uri(),
        }


@dataclass(frozen=True)
class TenantLogin:
    """An environment role's login: what the operator connects as inside its databases."""

    user: str
    password: str = field(repr=False)


def generate_password() -> str:
    """A new random password: 43 URL-safe characters from the OS's CSPRNG."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677).

    Passwords are limited to printable ASCII, which PostgreSQL's SASLprep leaves
    unchanged, so the verifier computed here is exactly the one the server would compute.
    """
    if not (0 < len(password) <= _MAX_PASSWORD_CHARS and password.isascii()):
        raise ValueError(f"a password must be 1 to {_MAX_PASSWORD_CHARS} ASCII characters")
    if not password.isprintable():
        raise ValueError("a password must not contain control characters")
    salt = secrets.token_bytes(_SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def sql_literal(text: str) -> str:
    """A standard-conforming SQL string literal (used for SCRAM verifiers only)."""
    if "\\" in text or not text.isascii():
        raise ValueError("refusing to quote backslashes or non-ASCII text")
    return "'" + text.replace("'", "''") + "'"
