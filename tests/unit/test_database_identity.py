"""What an environment's database and role are called, and how their passwords are made.

Pure functions only: no server is contacted (``ManagedPostgres`` connects on use, not
on construction).
"""

from __future__ import annotations

import re
import string
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from dockyard.operator.database import (
    DatabaseCredentials,
    ManagedPostgres,
    database_identity,
    generate_password,
    scram_sha256_verifier,
)
from dockyard.operator.database.names import quoted, retired_role_name

UNQUOTED_SAFE = re.compile(r"env_[a-z0-9_]+")
URL_SAFE = set(string.ascii_letters + string.digits + "-_")
LONG = "x" * 253  # the longest Kubernetes object name

TRICKY_PAIRS = [
    ("shop", "staging"),
    ("a-b", "c"),
    ("a_b", "c"),
    ("a", "b-c"),
    ("a", "b_c"),
    ("ab", "c"),
    ("a", "bc"),
    ("staging", "shop"),
    ("shop", "a.b"),
    ("shop", "a-b"),
    ("Shop", "staging"),
    ("", ""),
    ("", "-"),
    ("-", ""),
    ("ns", LONG),
    ("ns", LONG[:-1] + "y"),
    (LONG, "env"),
    (LONG[:-1] + "y", "env"),
    (LONG, LONG),
    ("ünïcödé", "名前"),
    ('quo"te', "semi;colon--"),
]


@pytest.mark.parametrize(("namespace", "environment"), TRICKY_PAIRS)
def test_names_are_unquoted_safe_identifiers_within_63_bytes(
    namespace: str, environment: str
) -> None:
    for name in database_identity(namespace, environment):
        assert UNQUOTED_SAFE.fullmatch(name), name
        assert len(name.encode()) <= 63


def test_names_are_deterministic() -> None:
    assert database_identity("shop", "staging") == database_identity("shop", "staging")


def test_short_names_stay_readable() -> None:
    database, role = database_identity("shop", "staging")
    assert re.fullmatch(r"env_shop_staging_[0-9a-f]{12}", database)
    assert role == database


def test_tricky_pairs_never_share_a_name() -> None:
    names = [database_identity(ns, env)[0] for ns, env in TRICKY_PAIRS]
    assert len(set(names)) == len(TRICKY_PAIRS)


def test_pairs_that_read_alike_differ() -> None:
    assert database_identity("a-b", "c") != database_identity("a_b", "c")
    assert database_identity("a", "b-c") != database_identity("a-b", "c")


def test_long_names_differing_only_at_the_end_differ() -> None:
    a, b = "p" * 200 + "a", "p" * 200 + "b"
    assert database_identity("ns", a) != database_identity("ns", b)
    assert database_identity(a, "env") != database_identity(b, "env")


def test_a_long_namespace_leaves_room_for_the_environment_name() -> None:
    database, _ = database_identity("n" * 100, "staging")
    assert "_staging_" in database
    assert len(database) == 63


def test_many_environments_do_not_collide() -> None:
    pairs = [(f"team-{i % 97}", f"env-{i}") for i in range(20_000)]
    names = {database_identity(ns, env)[0] for ns, env in pairs}
    assert len(names) == len(pairs)


def test_passwords_are_long_random_and_url_safe() -> None:
    passwords = [generate_password() for _ in range(1000)]
    assert len(set(passwords)) == len(passwords)
    for password in passwords:
        assert len(password) >= 32
        assert set(password) <= URL_SAFE
        assert quote(password, safe="") == password


def test_the_uri_quotes_the_password() -> None:
    creds = DatabaseCredentials(
        host="db.example", port=5433, database="env_x", user="env_x", password="p@ss:w/rd%"
    )
    uri = creds.uri()
    assert uri == "postgresql://env_x:p%40ss%3Aw%2Frd%25@db.example:5433/env_x"
    assert urlsplit(uri).port == 5433


def test_the_uri_brackets_an_ipv6_host() -> None:
    creds = DatabaseCredentials(host="::1", port=5432, database="d", user="u", password="p")
    assert urlsplit(creds.uri()).hostname == "::1"


@pytest.mark.parametrize(
    ("managed", "carried"),
    [("require", "require"), ("verify-full", "require"), ("verify-ca", "require"),
     ("prefer", "prefer"), ("disable", "disable")],
)  # fmt: skip
def test_the_uri_carries_the_managed_server_s_sslmode_and_none_of_its_files(
    managed: str, carried: str
) -> None:
    # The paths are the operator pod's, and the client certificate is the admin's; a pod
    # without the CA would not connect at all with verify-*, and require refuses plaintext.
    server = ManagedPostgres(
        f"postgresql://admin:pw@db.internal:5432/postgres?sslmode={managed}"
        "&sslrootcert=/etc/dockyard/ca.crt&sslcert=/etc/dockyard/admin.crt"
        "&sslkey=/etc/dockyard/admin.key&application_name=ops",
        public_host="db.example",
    )
    creds = server.credentials(namespace="shop", environment="staging", password="pw")
    assert parse_qs(urlsplit(creds.uri()).query) == {"sslmode": [carried]}


def test_without_an_sslmode_the_uri_has_no_query() -> None:
    server = ManagedPostgres("postgresql://admin:pw@db.internal:5432/postgres?connect_timeout=3")
    creds = server.credentials(namespace="shop", environment="staging", password="pw")
    assert urlsplit(creds.uri()).query == ""


def test_a_retired_role_s_name_is_quotable_distinct_per_role_and_fits() -> None:
    _, role = database_identity(LONG, LONG)
    retired = retired_role_name(role, 4_294_967_295)
    assert retired.startswith("retired_4294967295_env_")
    assert len(retired.encode()) <= 63
    assert quoted(retired) == f'"{retired}"'
    assert retired_role_name(role, 16_384) != retired_role_name(role, 16_385)
    with pytest.raises(ValueError, match="environment"):
        retired_role_name("dkr_0f8e2b6c1d2a4c3b", 16_384)


def test_secret_data_has_every_key_as_a_string() -> None:
    creds = DatabaseCredentials(host="h", port=5432, database="d", user="u", password="pw")
    assert creds.secret_data() == {
        "host": "h",
        "port": "5432",
        "database": "d",
        "username": "u",
        "password": "pw",
        "uri": "postgresql://u:pw@h:5432/d",
    }


def test_credentials_repr_hides_the_password() -> None:
    creds = DatabaseCredentials(host="h", port=1, database="d", user="u", password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(creds)


def test_the_scram_verifier_has_postgresql_format() -> None:
    verifier = scram_sha256_verifier("pencil", salt=b"0123456789abcdef")
    assert re.fullmatch(
        r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", verifier
    )
    assert verifier == scram_sha256_verifier("pencil", salt=b"0123456789abcdef")
    assert verifier != scram_sha256_verifier("pencil")  # a fresh salt each time by default


@pytest.mark.parametrize("bad", ["", "naïve-passwörd", "tab\there", "x" * 1025])
def test_unusable_passwords_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ValueError, match="password") as info:
        scram_sha256_verifier(bad)
    assert not bad or bad not in str(info.value)


def test_constructing_does_not_connect_and_repr_hides_the_dsn() -> None:
    server = ManagedPostgres("postgresql://admin:hunter2-secret@127.0.0.1:1/postgres")
    assert "hunter2-secret" not in repr(server)
    assert "127.0.0.1:1" in repr(server)


def test_a_dsn_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        ManagedPostgres("mysql://admin:pw@db/x")
