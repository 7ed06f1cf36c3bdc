"""Time like Google: a simulated Pacific now, and what each day holds at that moment.

A day's data is final from midnight of day + ``final_lag_days`` (Pacific); before that it is fresh:
partial and still converging, with today holding only the hours that have begun. Nothing exists
after today or before the 16-month retention window, and hourly rows only for the last days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from ..errors import ConfigError
from ..planner import earliest_day
from .keys import pacific

NOON = time(12)


def as_pacific(when: datetime | date | str) -> datetime:
    """A moment as an aware Pacific datetime: a date means noon, a naive datetime is Pacific."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when) if "T" in when or " " in when else (
                date.fromisoformat(when))
        except ValueError:
            raise ConfigError(f"simulated time {when!r} is not ISO 8601 (YYYY-MM-DD or "
                              "YYYY-MM-DDTHH:MM[:SS][+HH:MM])") from None
    if not isinstance(when, datetime):
        if not isinstance(when, date):
            raise ConfigError(f"simulated time must be a datetime, date or ISO string, not "
                              f"{type(when).__name__}")
        when = datetime.combine(when, NOON)
    tz = pacific()
    return when.replace(tzinfo=tz) if when.tzinfo is None else when.astimezone(tz)


class SimClock:
    """The simulated now: frozen at a given moment, or the real clock shifted by an offset.

    ``SimClock(None)`` follows the real Pacific clock; ``SimClock(moment)`` stands still at
    ``moment``. :meth:`set` and :meth:`advance` move either kind and keep it frozen or running.
    """

    def __init__(self, start: datetime | date | str | None = None) -> None:
        self._frozen = None if start is None else as_pacific(start)
        self._offset = timedelta(0)

    @property
    def running(self) -> bool:
        """Whether the clock follows real time (it does unless started at a fixed moment)."""
        return self._frozen is None

    def now(self) -> datetime:
        """The simulated moment, aware, in Pacific time."""
        if self._frozen is not None:
            return self._frozen
        return datetime.now(pacific()) + self._offset

    def today(self) -> date:
        """The simulated Pacific date."""
        return self.now().date()

    def set(self, when: datetime | date | str) -> datetime:
        """Move the clock to ``when`` (a running clock keeps running from there)."""
        moment = as_pacific(when)
        if self._frozen is not None:
            self._frozen = moment
        else:
            self._offset = moment - datetime.now(pacific())
        return self.now()

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
        """Let time pass (or go back, with negative values) without waiting."""
        delta = timedelta(days=days, hours=hours, minutes=minutes)
        if self._frozen is not None:
            self._frozen = (self._frozen + delta).astimezone(pacific())
        else:
            self._offset += delta
        return self.now()


@dataclass(frozen=True)
class DayState:
    """What a day holds at a moment: ``kind`` is ``final``, ``fresh`` or ``none`` (no data).

    A fresh day has ``completeness`` in (0, 1), the share of its final figures collected so far,
    and ``hours``: how many of its hours have begun (24 unless it is today).
    """

    kind: str
    completeness: float = 1.0
    hours: int = 24
    age_hours: int = 0


FINAL = DayState("final")
NONE = DayState("none", 0.0, 0)


def day_state(day: date, now: datetime, *, final_lag_days: int, all_final: bool) -> DayState:
    """The state of ``day`` at ``now`` (Pacific)."""
    today = now.date()
    if day > today or day < earliest_day(today):
        return NONE
    if all_final or day <= today - timedelta(days=final_lag_days):
        return FINAL
    start = datetime.combine(day, time(0), tzinfo=now.tzinfo)
    age = max(0, int((now - start).total_seconds() // 3600))
    hours = min(24, age + 1)
    return DayState("fresh", completeness(age), hours, age)


def completeness(age_hours: int) -> float:
    """The share of a day's final figures visible ``age_hours`` after the day began.

    About 63% at noon the same day, 78% when it ends, 91% two days after it began, 94% just
    before a 3-day lag makes it final: fresh figures stay below final ones and only rise.
    """
    return 1.0 - 0.6 * math.exp(-age_hours / 20.0) - 0.04


def first_fresh_day(now: datetime, *, final_lag_days: int, all_final: bool) -> date | None:
    """The oldest day that is not final yet (``None`` when every day is final)."""
    if all_final or final_lag_days == 0:
        return None
    return now.date() - timedelta(days=final_lag_days - 1)


def newest_final_day(now: datetime, *, final_lag_days: int, all_final: bool) -> date:
    """The newest day whose data is final."""
    if all_final:
        return now.date()
    return now.date() - timedelta(days=final_lag_days)


def hourly_available(day: date, today: date, hourly_days: int) -> bool:
    """Whether hourly rows exist for ``day``: only for the last ``hourly_days`` days."""
    return today - timedelta(days=hourly_days) <= day <= today
