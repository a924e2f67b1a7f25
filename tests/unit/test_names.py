"""Names and label values made from other names stay within Kubernetes' limits and apart."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from dockyard.core.names import LABEL_VALUE_MAX, fitted, label_value
from dockyard.operator.backups.schedules import backup_name
from dockyard.operator.environments.defaults import default_schedule_name
from dockyard.operator.restores.safety import safety_backup_name
from dockyard.operator.runs import jobs
from dockyard.operator.runs.stores import derived_secret_name

# Kubernetes' label value: empty, or 63 characters at most, alphanumeric at both ends.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize("name", ["a", "nightly", "x" * 63])
def test_a_name_that_fits_is_its_own_label_value(name: str) -> None:
    assert label_value(name) == name


@pytest.mark.parametrize("name", ["x" * 64, "a-" * 100 + "b", "a." * 100 + "b", "y" * 253])
def test_a_longer_name_becomes_a_valid_label_value(name: str) -> None:
    value = label_value(name)

    assert len(value) <= LABEL_VALUE_MAX
    assert LABEL_VALUE.match(value), value
    assert value == label_value(name)  # the same name, the same value: a selector finds it


def test_long_names_that_share_their_beginning_stay_apart() -> None:
    shared = "team-a-nightly-backups-of-the-orders-database-in-production-"
    first, second = shared + "eu", shared + "us"

    assert label_value(first) != label_value(second)
    assert jobs.job_name(first, 1) != jobs.job_name(second, 1)
    assert fitted(first, 63, suffix="-safety") != fitted(second, 63, suffix="-safety")


def test_a_suffix_is_kept_whole_after_the_cut() -> None:
    name = fitted("z" * 300, 253, suffix="-202612061200")

    assert len(name) == 253
    assert name.endswith("-202612061200")
    assert SUBDOMAIN.match(name)


def test_there_must_be_room_for_a_name_beside_its_suffix() -> None:
    with pytest.raises(ValueError, match="no room"):
        fitted("a" * 100, 12, suffix="-" + "s" * 5)


def test_every_run_of_a_long_named_drill_has_its_own_job_name() -> None:
    """``drill-<name>-<run>`` cut to fit used to lose the run: run 2's Job was run 1's."""
    drill = "a-drill-whose-name-leaves-no-room-for-its-run-number-x"
    names = {jobs.job_name(f"{drill}-{run}", 1, kind="drill") for run in range(1, 20)}

    assert len(names) == 19
    assert all(len(name) <= 63 and name.endswith("-1") for name in names)


@pytest.mark.parametrize(
    "make",
    [
        lambda name: safety_backup_name(name),
        lambda name: default_schedule_name(name),
        lambda name: derived_secret_name(name, "k-0123456789abcdef"),
        lambda name: jobs.job_name(name, 7, kind="restore"),
    ],
)
def test_derived_names_are_valid_and_unchanged_for_short_names(make: Callable[[str], str]) -> None:
    long = make("n" * 253)
    assert SUBDOMAIN.match(long)
    assert len(long) <= 253
    short = make("shop")
    assert short.startswith("shop-") or short.startswith("restore-shop-")
    assert not re.search(r"-[0-9a-f]{8}-", short)  # no digest when nothing was cut


def test_a_schedules_backups_keep_the_schedules_name_and_their_time() -> None:
    due = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    assert backup_name("nightly", due, run_now=False) == "nightly-202612061200"
    long = backup_name("s" * 253, due, run_now=False)
    assert long.endswith("-202612061200")
    assert len(long) == 253
