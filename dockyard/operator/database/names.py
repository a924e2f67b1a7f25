"""What the operator's databases and roles are called, and the check every name passes.

An environment's database and role share one identifier (:func:`database_identity`);
restores and drills restore into databases named from their object's uid
(:func:`staging_database_name`); a role that cannot be dropped is renamed out of the way
(:func:`retired_role_name`). Nothing else is ever formatted into SQL as a name:
:func:`quoted` checks a name against the strict pattern of these identities first.
"""

from __future__ import annotations

import hashlib
import json
import re

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes, silently: two long
# names could then meet in one object, so names are built to fit instead.
MAX_IDENTIFIER_BYTES = 63
IDENTITY_PREFIX = "env_"
RETIRED_ROLE_PREFIX = "retired_"
# 12 hex digits = 48 bits of SHA-256: a collision needs millions of environments, and
# the digest covers the exact (namespace, name) pair, not its lossy readable form.
_DIGEST_CHARS = 12
# Room left for the readable "<namespace>_<name>" part, separator included.
_READABLE_BYTES = MAX_IDENTIFIER_BYTES - len(IDENTITY_PREFIX) - 1 - _DIGEST_CHARS
# Environment databases and roles, the restore (dkr_) and drill (dkd_) databases, and
# retired environment roles (retired_<oid>_env_...).
_IDENTITY_PATTERN = re.compile(
    r"env_[a-z0-9_]{1,59}|dk[rd]_[0-9a-f]{16}(_[0-9]{1,6})?(_old)?"
    r"|retired_[0-9]{1,10}_env_[a-z0-9_]{0,49}"
)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def database_identity(namespace: str, environment: str) -> tuple[str, str]:
    """The (database, role) names of one environment: ``env_<namespace>_<name>_<digest>``.

    Both are the same identifier (databases and roles live in separate catalogs, and a
    role's default database is the one named after it). The readable part is lowercase
    ``[a-z0-9_]``, shortened fairly between namespace and name to fit 63 bytes; the
    digest is always present because the readable part alone is lossy (``a-b`` and
    ``a_b``, or ``a``+``b-c`` and ``a-b``+``c``, read the same).
    """
    exact = json.dumps([namespace, environment]).encode()
    digest = hashlib.sha256(exact).hexdigest()[:_DIGEST_CHARS]
    ns, env = _fit(_slug(namespace), _slug(environment), _READABLE_BYTES - 1)
    readable = "_".join(part for part in (ns, env) if part)
    name = f"{IDENTITY_PREFIX}{readable}_{digest}" if readable else f"{IDENTITY_PREFIX}{digest}"
    return name, name


def _slug(text: str) -> str:
    return _NOT_SLUG.sub("_", text.lower()).strip("_")


def _fit(first: str, second: str, budget: int) -> tuple[str, str]:
    """Shorten two parts to ``budget`` characters together, the longer one first."""
    if len(first) + len(second) > budget:
        half = budget // 2
        if len(first) <= half:
            second = second[: budget - len(first)]
        elif len(second) <= budget - half:
            first = first[: budget - len(second)]
        else:
            first, second = first[:half], second[: budget - half]
    return first.rstrip("_"), second.rstrip("_")


def staging_database_name(kind: str, uid: str, attempt: int = 0) -> str:
    """The database a restore (``kind`` "r") or drill ("d") run restores into.

    Derived from the object's uid, so an interrupted run finds its own database again
    and two objects never share one; short enough for any server.
    """
    if kind not in ("r", "d") or not re.fullmatch(r"[0-9a-f-]{8,36}", uid):
        raise ValueError("staging databases are named from a restore or drill uid")
    suffix = f"_{attempt}" if attempt else ""
    return f"dk{kind}_{uid.replace('-', '')[:16]}{suffix}"


def retired_database_name(uid: str) -> str:
    """What a restore renames the database it replaced to, until it is dropped."""
    return f"{staging_database_name('r', uid)}_old"


def retired_role_name(role: str, oid: int) -> str:
    """What an environment's role is renamed to when it cannot be dropped:
    ``retired_<oid>_<role>``, cut to 63 bytes.

    Its own name is then free for the role of a later environment of that name; the oid
    keeps the tombstones of one name apart, and what is left of the name says whose it was.
    """
    quoted(role)
    if not role.startswith(IDENTITY_PREFIX) or not 0 < oid < 2**32:
        raise ValueError("only an environment's role is retired")
    return f"{RETIRED_ROLE_PREFIX}{oid}_{role}"[:MAX_IDENTIFIER_BYTES]


def quoted(name: str) -> str:
    """``name`` double-quoted, after checking that it is one of this package's identities."""
    if not _IDENTITY_PATTERN.fullmatch(name) or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError("not an environment database identifier")
    return f'"{name}"'
