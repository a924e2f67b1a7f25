"""What every kind's status holds, and the transitions it goes through.

``Status`` is the base of every kind's status: ``observedGeneration`` and ``conditions``
with the helpers that change them. ``RunStatus`` adds what a kind that runs attempts to
an end has (Backup, Restore): a phase, a message, the attempts and their times, and the
transitions ``running``, ``completed``, ``failed`` and ``retrying``.

Statuses are values. Every method returns an updated copy (``model_copy``) and leaves
the status it is called on as it was, so a caller computes the next status, writes it,
and still has the one it read. Like ``model_copy``, the copies are not validated again;
the methods only put in values of the fields' own types.

A kind words the inherited fields for itself with ``field_descriptions`` (see
``CRModel``): the description of its conditions, its message, ...
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

from pydantic import Field

from dockyard.core import conditions as condition_lists
from dockyard.core.models.common import Condition, ConditionStatus, CRModel

# Longest status message; longer ones are cut (the API server would refuse them).
MESSAGE_MAX_LENGTH: Final = 4096
# The condition of a kind whose work waits while its database server is out (Backup,
# Restore, RestoreDrill): True while paused, False once the server answers again.
DATABASE_UNAVAILABLE: Final = "DatabaseUnavailable"
# The Ready condition of a kind that runs on a schedule, and its reason while the strict
# cron parser refuses the schedule or time zone (``ScheduledStatus``).
READY: Final = "Ready"
INVALID_SCHEDULE: Final = "InvalidSchedule"
# The members a run's phase enum must have for ``RunStatus``'s transitions, and those
# that end a run.
RUN_PHASES: Final = ("PENDING", "COMPLETED", "FAILED")
FINAL_RUN_PHASES: Final = ("COMPLETED", "FAILED")


class RunPhase:
    """Mixed into the phase enum of a kind that runs to an end, before ``StrEnum``
    (``class BackupPhase(RunPhase, StrEnum)``): its COMPLETED and FAILED are final."""

    __slots__ = ()
    name: str

    @property
    def is_done(self) -> bool:
        """Whether the run will not change phase any more (Completed or Failed)."""
        return self.name in FINAL_RUN_PHASES


class Status(CRModel):
    """Base of every kind's status: the generation acted on and the current conditions.

    Methods return updated copies. Subclasses set ``field_descriptions`` to describe the
    inherited fields in the kind's words; at least ``conditions``, naming the kind's
    condition types.
    """

    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Current conditions."""

    # -- conditions ------------------------------------------------------------------------

    def condition(self, type: str) -> Condition | None:
        """The condition of ``type``, if set."""
        return condition_lists.find(self.conditions, type)

    def is_true(self, type: str) -> bool:
        """Whether the condition of ``type`` is set and True."""
        found = self.condition(type)
        return found is not None and found.status is ConditionStatus.TRUE

    def database_out(self, reason: str, message: str, *, generation: int | None) -> Self:
        """A copy whose work waits for the database server: ``DatabaseUnavailable`` True
        with ``reason`` (``ServerUnreachable``, ...) and ``message``."""
        return self.with_condition(
            DATABASE_UNAVAILABLE, True, reason, message, generation=generation
        )

    def database_back(self, *, generation: int | None) -> Self:
        """A copy whose work goes on: ``DatabaseUnavailable`` False, if it was ever set."""
        if self.condition(DATABASE_UNAVAILABLE) is None:
            return self
        return self.with_condition(
            DATABASE_UNAVAILABLE,
            False,
            "ServerAnswers",
            "The database server answers again; the work resumed.",
            generation=generation,
        )

    def with_condition(
        self,
        type: str,
        ok: bool | ConditionStatus,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: datetime | None = None,
    ) -> Self:
        """A copy with the condition ``type`` set (``ok`` True/False, or Unknown).

        Its ``lastTransitionTime`` moves only when its status changes
        (``dockyard.core.conditions.set_condition``); ``generation`` is the condition's
        ``observedGeneration``.
        """
        if isinstance(ok, bool):
            ok = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
        conditions = condition_lists.set_condition(
            self.conditions,
            type=type,
            status=ok,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
        return self.model_copy(update={"conditions": conditions})

    def observed(self, generation: int | None) -> Self:
        """A copy that records ``generation`` as the one acted on."""
        return self.model_copy(update={"observed_generation": generation})

    def refused(
        self,
        type: str,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: datetime | None = None,
        update: dict[str, Any] | None = None,
    ) -> Self:
        """A copy for a spec the operator cannot act on: ``generation`` observed, the
        condition ``type`` False with ``reason`` and ``message``, and ``update`` applied
        (say, clearing a planned time that no longer holds)."""
        refused = self.model_copy(update=update or {}).observed(generation)
        return refused.with_condition(type, False, reason, message, generation=generation, now=now)

    # -- writing ---------------------------------------------------------------------------

    def body(
        self, *, include: Collection[str] | None = None, exclude: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The status as the ``status`` of a merge patch: wire names, JSON values, and
        None for a field that is unset (which clears it). ``include`` and ``exclude``
        take Python field names."""
        return self.model_dump(
            mode="json",
            by_alias=True,
            include=None if include is None else set(include),
            exclude=None if exclude is None else set(exclude),
        )


class ScheduledStatus(Status):
    """The status of a kind that runs on a cron schedule (BackupSchedule, RestoreDrill).

    Its Ready condition says whether the schedule and time zone parse, and a subclass
    names in ``next_time_field`` the field that holds the next planned run.
    """

    next_time_field: ClassVar[str]

    def scheduled(
        self, message: str, *, suspended: bool, generation: int | None, now: datetime | None = None
    ) -> Self:
        """A copy whose schedule parses: Ready True, with reason Suspended or Scheduled and
        ``message`` saying when it runs next."""
        reason = "Suspended" if suspended else "Scheduled"
        return self.with_condition(READY, True, reason, message, generation=generation, now=now)

    def schedule_refused(
        self, error: str, *, generation: int | None, now: datetime | None = None
    ) -> Self:
        """A copy for a schedule or time zone the strict parser refused: ``generation``
        observed, Ready False with reason InvalidSchedule and the parser's ``error``, and
        no next run planned."""
        return self.refused(
            READY,
            INVALID_SCHEDULE,
            error,
            generation=generation,
            now=now,
            update={self.next_time_field: None},
        )


class RunStatus(Status):
    """The status of a kind that runs attempts to an end (Backup, Restore).

    A subclass declares ``phase`` again with its own enum and description, sets
    ``phases`` to that enum (it must have PENDING, COMPLETED and FAILED) and
    ``outcome_condition`` to the condition that says how the run ended, which
    ``completed``, ``failed`` and ``retrying`` set. Messages longer than
    ``MESSAGE_MAX_LENGTH`` are cut, in the status and in the condition alike.
    """

    phases: ClassVar[type[StrEnum]]
    outcome_condition: ClassVar[str]

    phase: StrEnum | None = None
    """Where the run is in its life."""
    message: str | None = Field(default=None, max_length=MESSAGE_MAX_LENGTH)
    """Human-readable detail of the phase."""
    attempts: int = Field(default=0, ge=0)
    """Runs started."""
    started_at: datetime | None = None
    """When the run started."""
    completed_at: datetime | None = None
    """When the run completed or failed."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        phases = cls.__dict__.get("phases")
        if phases is None:
            return
        missing = [name for name in RUN_PHASES if name not in phases.__members__]
        if missing:
            raise TypeError(f"{cls.__name__}.phases lacks {', '.join(missing)}")

    @property
    def is_done(self) -> bool:
        """Whether the run has ended (Completed or Failed) and will not change phase."""
        return self.phase is not None and self.phase.name in FINAL_RUN_PHASES

    def running(
        self,
        message: str,
        *,
        attempt: int,
        phase: StrEnum | None = None,
        at: datetime | None = None,
    ) -> Self:
        """A copy for attempt number ``attempt`` under way: in ``phase`` (the enum's
        RUNNING unless given; a kind without one, such as Restore, names it), started
        ``at`` (now unless given), not completed."""
        return self.model_copy(
            update={
                "phase": phase or self.phases["RUNNING"],
                "message": _cut(message),
                "attempts": attempt,
                "started_at": at or datetime.now(UTC),
                "completed_at": None,
            }
        )

    def completed(
        self,
        message: str,
        *,
        generation: int | None,
        reason: str = "Completed",
        detail: str | None = None,
        at: datetime | None = None,
    ) -> Self:
        """A copy of the run completed at ``at`` (now unless given): phase COMPLETED, the
        outcome condition True with ``reason`` and ``detail`` (else ``message``)."""
        return self._ended(self.phases["COMPLETED"], True, reason, message, detail, generation, at)

    def failed(
        self,
        reason: str,
        message: str,
        *,
        generation: int | None,
        at: datetime | None = None,
    ) -> Self:
        """A copy of the run failed at ``at`` (now unless given) for ``reason``: phase
        FAILED, the outcome condition False with ``reason`` and ``message``."""
        return self._ended(self.phases["FAILED"], False, reason, message, None, generation, at)

    def retrying(
        self, message: str, *, reason: str | None = None, generation: int | None = None
    ) -> Self:
        """A copy waiting for another attempt: phase PENDING, no ``completedAt``; with a
        ``reason``, the outcome condition False with it and ``message``."""
        retry = self.model_copy(
            update={"phase": self.phases["PENDING"], "message": _cut(message), "completed_at": None}
        )
        if reason is None:
            return retry
        return retry.with_condition(
            self.outcome_condition, False, reason, _cut(message), generation=generation
        )

    def _ended(
        self,
        phase: StrEnum,
        ok: bool,
        reason: str,
        message: str,
        detail: str | None,
        generation: int | None,
        at: datetime | None,
    ) -> Self:
        ended = self.model_copy(
            update={
                "phase": phase,
                "message": _cut(message),
                "completed_at": at or datetime.now(UTC),
            }
        )
        return ended.with_condition(
            self.outcome_condition, ok, reason, _cut(detail or message), generation=generation
        )


def _cut(message: str) -> str:
    return message[:MESSAGE_MAX_LENGTH]


__all__ = [
    "INVALID_SCHEDULE",
    "MESSAGE_MAX_LENGTH",
    "READY",
    "RunStatus",
    "ScheduledStatus",
    "Status",
]
