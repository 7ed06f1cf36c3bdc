"""What each day of a stream needs, decided from what Google says now and what the ledger holds.

Search Console data is not settled when it first appears: final data arrives a few days after a
day ends (Pacific time); until then ``dataState=all`` serves fresh, partial figures that still
change, and ``dataState=final`` answers with no rows. So gsckit asks Google, once per run and per
(site, search type), with the cheap request Google recommends: one ``date``-grouped request
over the last 10 days with ``dataState=all`` (``hour``-grouped with ``hourly_all`` for hourly
streams). Its last row is the newest day with data; ``metadata.firstIncompleteDate`` (or
``first_incomplete_date``; ``firstIncompleteHour`` / ``first_incomplete_hour`` when hourly) is
the first day that is not final. That is a :class:`Freshness`.

:func:`plan_stream` is the one place that turns a stream's ledger days and a :class:`Freshness`
into what to fetch, and why (the rules are in its docstring). The store enforces the rule that
matters most on its own as well (final rows are never replaced by fresh or empty answers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from .errors import TransportError
from .store import FINAL, FORCE, FRESH, MISSING, RECHECK, LedgerDay

PROBE_DAYS = 10
"""Days the probe covers, today included (Google's recipe for the newest final day)."""
PROBE_ROW_LIMIT = 1_000  # 10 days, or 240 hours
DATE_MARKERS = ("firstIncompleteDate", "first_incomplete_date")
HOUR_MARKERS = ("firstIncompleteHour", "first_incomplete_hour")
# what a dry run assumes without asking: Google's final data "typically available after 2-3 days"
USUAL_LAG_DAYS = 3


def probe_window(end: date) -> tuple[date, date]:
    """The days a probe ending at ``end`` asks about: :data:`PROBE_DAYS` days (the first probe
    ends today)."""
    return end - timedelta(days=PROBE_DAYS - 1), end


def settled_through(today: date) -> date:
    """The newest day taken as final without asking: the day before the probe's window.

    Google finalises within a few days and looks for the newest final day in the last 10 days,
    so a range that ends before that window needs no probe.
    """
    return probe_window(today)[0] - timedelta(days=1)


@dataclass(frozen=True)
class Freshness:
    """What Google says about a (site, search type) at one moment.

    ``newest_final``: the newest day whose data is final (every day up to it is final).
    ``newest_data``: the newest day with any data (``None``: none in the probe's window).
    ``first_incomplete``: the first-incomplete marker exactly as Google sent it (``None`` when it
    sent none: every day with data is final). ``probed``: false when nothing was asked, because
    every day concerned is older than the probe's window. ``rows``: the rows the probe returned.
    """

    newest_final: date
    newest_data: date | None = None
    first_incomplete: str | None = None
    probed: bool = True
    rows: int = field(default=0, compare=False)

    @classmethod
    def settled(cls, today: date) -> Freshness:
        """Freshness for days older than the probe's window, which are final without asking."""
        return cls(settled_through(today), None, None, probed=False)

    def is_final(self, day: date) -> bool:
        return day <= self.newest_final

    def behind(self, start: date) -> bool:
        """Whether Google's first incomplete day is the first day of a probe window starting at
        ``start``: Google only reports one inside the range asked, so days before it may not be
        final either, and the window before must be asked too."""
        return self.first_incomplete is not None and self.newest_final < start

    def before(self, older: Freshness) -> Freshness:
        """This answer completed by the probe of the window before it (see :meth:`behind`)."""
        return Freshness(older.newest_final, self.newest_data or older.newest_data,
                         older.first_incomplete, rows=self.rows + older.rows)

    @property
    def data_through(self) -> date:
        """The newest day worth fetching with ``all``: the newest with data, else the newest
        final one."""
        return max(self.newest_data or self.newest_final, self.newest_final)


def probe_body(search_type: str, end: date, *, hourly: bool) -> dict[str, Any]:
    """The probe request: grouped by ``date`` (``hour`` when hourly) over the 10 days that end
    at ``end``."""
    start, end = probe_window(end)
    return {"startDate": start.isoformat(), "endDate": end.isoformat(),
            "dimensions": ["hour" if hourly else "date"], "type": search_type,
            "dataState": "hourly_all" if hourly else "all", "rowLimit": PROBE_ROW_LIMIT,
            "startRow": 0}


def _day_of(key: object, what: str) -> date:
    """The Pacific day of a ``YYYY-MM-DD`` key or a ``YYYY-MM-DDThh:mm:ss±hh:mm`` stamp (the
    stamp's own date is Pacific: Google writes hours with the Pacific offset)."""
    try:
        if isinstance(key, str) and len(key) >= 10:
            return date.fromisoformat(key[:10])
    except ValueError:
        pass
    raise TransportError(f"the probe's answer has an unreadable {what} {key!r}")


def parse_probe(body: bytes, *, start: date, hourly: bool) -> Freshness:
    """Read the answer of a probe whose window starts at ``start``: the newest day with data and
    the first day that is not final.

    Both spellings of the metadata are read (Google documents ``firstIncompleteDate`` and
    ``first_incomplete_date``); without a marker every day with data is final, and with no
    data at all every day before the window is.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        raise TransportError("the probe's answer is not valid JSON") from None
    if not isinstance(answer, dict):
        raise TransportError("the probe's answer is not a JSON object")
    rows = answer.get("rows") or []
    try:
        days = [_day_of(row["keys"][0], "key") for row in rows]
    except (TypeError, KeyError, IndexError):
        raise TransportError("the probe's answer has rows without keys") from None
    metadata = answer.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    names = (*HOUR_MARKERS, *DATE_MARKERS) if hourly else DATE_MARKERS
    marker = next((metadata[name] for name in names if metadata.get(name)), None)
    newest_data = max(days) if days else None
    if marker is not None:
        newest_final = _day_of(marker, "first-incomplete marker") - timedelta(days=1)
    elif newest_data is not None:
        newest_final = newest_data
    else:
        newest_final = start - timedelta(days=1)
    return Freshness(newest_final, newest_data, None if marker is None else str(marker),
                     rows=len(days))


def estimate(today: date, ledger: Iterable[LedgerDay]) -> Freshness:
    """A guess at Google's freshness without asking (for a dry run): the newest final day the
    ledger recorded, moved on by the days since that fetch, else today minus Google's usual
    lag; never later than the usual lag allows, never earlier than what was recorded. Data is
    assumed through today."""
    usual = today - timedelta(days=USUAL_LAG_DAYS)
    known = [(day.newest_final, day.fetched_at.date()) for day in ledger
             if day.newest_final is not None and day.fetched_at is not None]
    if not known:
        return Freshness(usual, today, None, probed=False)
    newest, fetched = max(known)
    guess = min(newest + (today - fetched), usual)
    return Freshness(max(guess, newest), today, None, probed=False)


@dataclass(frozen=True)
class DayTask:
    """One day to fetch: what to send and what it will be recorded as.

    ``data_state``: the ``dataState`` sent; ``state``: ``final`` or ``fresh``; ``reason``:
    ``missing`` (not in the ledger), ``fresh`` (fetched again until final; a promotion when it
    is final now), ``recheck`` (a recent final day, asked once more) or ``force``.
    """

    day: date
    data_state: str
    state: str
    reason: str


@dataclass(frozen=True)
class StreamPlan:
    """What one stream's days need: ``fetch`` (oldest first), ``complete`` (final, skipped),
    ``not_final_yet`` (after Google's newest final day, in a ``final`` run: nothing is asked or
    written for them, and a fresh day already stored stays as it is) and ``unknown`` (days whose
    state could not be learnt: the probe failed)."""

    fetch: tuple[DayTask, ...] = ()
    complete: tuple[date, ...] = ()
    not_final_yet: tuple[date, ...] = ()
    unknown: tuple[date, ...] = ()
    freshness: Freshness | None = field(default=None, compare=False)

    @property
    def promotions(self) -> int:
        """Fresh days fetched as final: promoted when committed."""
        return sum(1 for t in self.fetch if t.reason == FRESH and t.state == FINAL)


def sync_start(ledger: Mapping[date, LedgerDay], earliest: date) -> date:
    """Where a sync without ``--start`` begins a stream: the day after its last final day; for a
    stream with only fresh days, its first day; for a new stream, ``earliest`` (16 months)."""
    finals = [day for day, entry in ledger.items() if entry.final]
    if finals:
        return max(max(finals) + timedelta(days=1), earliest)
    return max(min(ledger), earliest) if ledger else earliest


def plan_stream(ledger: Mapping[date, LedgerDay], freshness: Freshness | None, *,
                start: date, end: date, data_state: str, force: bool = False,
                lookback_days: int = 0, every_fresh_day: bool = False,
                settled: date | None = None) -> StreamPlan:
    """Decide what each day of one stream needs.

    The days considered: ``start`` to ``end``; with ``every_fresh_day`` also every fresh day in
    the ledger; with ``lookback_days`` also the final days among the newest ``lookback_days``
    final days. Then, with F Google's newest final day:

    - a day up to F is fetched as ``final``: when missing, when fresh (a promotion), when
      ``force`` is given, or once as a re-check: a final day within the look-back whose fetch
      knew an older F (Google has moved on since) and was not re-checked yet; else it is
      complete;
    - a day after F is never recorded as final. In a ``final`` run it is *not final yet* (nothing
      is asked or written for it); otherwise it is fetched as ``fresh`` (``dataState`` ``all`` or
      ``hourly_all``), unless the ledger already holds it as final.

    ``freshness=None`` means the probe failed: days up to ``settled`` (older than the probe's
    window) are final anyway, later ones are ``unknown``.
    """
    hourly = data_state == "hourly_all"
    final_sent = "hourly_all" if hourly else FINAL
    fresh_sent = "hourly_all" if hourly else "all"
    if freshness is None:
        if settled is None:
            raise ValueError("plan_stream needs settled when freshness is unknown")
        newest_final = settled
    else:
        newest_final = freshness.newest_final
    days = {start + timedelta(days=n) for n in range((end - start).days + 1)}
    if every_fresh_day:
        days |= {day for day, entry in ledger.items() if not entry.final}
    window = newest_final - timedelta(days=lookback_days)
    if lookback_days > 0:
        days |= {day for day, entry in ledger.items()
                 if entry.final and window < day <= newest_final}
    fetch: list[DayTask] = []
    complete: list[date] = []
    later: list[date] = []
    unknown: list[date] = []
    for day in sorted(days):
        entry = ledger.get(day)
        if day <= newest_final:
            if entry is None:
                fetch.append(DayTask(day, final_sent, FINAL, MISSING))
            elif not entry.final:
                fetch.append(DayTask(day, final_sent, FINAL, FRESH))
            elif force:
                fetch.append(DayTask(day, final_sent, FINAL, FORCE))
            elif (lookback_days > 0 and day > window and not entry.rechecked
                  and entry.newest_final is not None and entry.newest_final < newest_final):
                fetch.append(DayTask(day, final_sent, FINAL, RECHECK))
            else:
                complete.append(day)
        elif entry is not None and entry.final:
            complete.append(day)  # final rows are never replaced by fresh ones
        elif freshness is None:
            unknown.append(day)
        elif data_state == FINAL:
            later.append(day)
        else:
            fetch.append(DayTask(day, fresh_sent, FRESH, MISSING if entry is None else FRESH))
    return StreamPlan(tuple(fetch), tuple(complete), tuple(later), tuple(unknown), freshness)
