"""Re-planning a day that reached the API's daily row cap as partitions that each stay under it.

Google exposes at most 50,000 rows per day and search type, the top ones by clicks. A filtered
request is an answer of its own with its own cap, so (if Google filters before it caps, which it
does not document) the rows past the cap can be reached by asking for the day in parts:

1. by device: three partitions, each with an ``equals`` filter;
2. a device partition still capped, by country: one request grouped by ``country`` (with the
   partition's filters) gives each country's impressions; the top countries become ``equals``
   partitions, and one *remainder* partition excludes them all with ``notEquals`` filters in the
   same ``and`` group (the API ANDs the filters of a group and has no OR).

The partitions of a level are disjoint and together cover their parent exactly, whatever the
country answer said (the remainder takes every country not named), so their rows add up to the
day's rows for the requested dimensions (:func:`gsckit.rows.merge`). A partition still capped at
the country level stays capped: its missing rows are reported, not guessed.

Everything here is pure: the engine asks what to fetch next and hands back what it got.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import polars as pl

from .planner import DEVICES, ROW_CAP, Filter, Slice

MAX_COUNTRIES = 20
"""At most this many countries get a partition of their own: each costs at least a request, and
past the first twenty the rest of the world holds a few percent of a property's rows."""
REMAINDER_TARGET = 0.6
"""The remainder partition is planned to hold at most this share of the cap: the estimate of a
partition's rows is rough (see :func:`choose_countries`), and a remainder that reaches the cap
loses rows while one more country costs one request."""

WHOLE, DEVICE, COUNTRY, REST = "day", "device", "country", "rest"


@dataclass(frozen=True)
class Partition:
    """One part of a day: the day's slice narrowed by ``filters`` (added to its own, in the same
    ``and`` group). ``level`` is ``day`` (the whole day), ``device``, ``country`` or ``rest``."""

    filters: tuple[Filter, ...] = ()
    level: str = WHOLE

    @property
    def label(self) -> str:
        """A short name: ``MOBILE``, ``MOBILE/USA``, ``MOBILE/rest of 6``, ``day``."""
        if not self.filters:
            return WHOLE
        names = [f.expression for f in self.filters if f.operator == "equals"]
        if self.level == REST:
            excluded = sum(f.operator == "notEquals" for f in self.filters)
            names.append(f"rest of {excluded}")
        return "/".join(names)

    def request(self, piece: Slice) -> Slice:
        """The slice to fetch for this partition of ``piece``'s day."""
        return replace(piece, filters=piece.filters + self.filters) if self.filters else piece


WHOLE_DAY = Partition()


def _pinned(filters: tuple[Filter, ...], dimension: str) -> bool:
    """Whether ``filters`` already hold ``dimension`` to one value (nothing left to split)."""
    return any(f.dimension == dimension and f.operator == "equals" for f in filters)


def next_level(piece: Slice, partition: Partition) -> str | None:
    """How a capped ``partition`` of ``piece``'s day is split further: ``device``, ``country``,
    or ``None`` when it cannot be (its rows past the cap stay missing)."""
    filters = piece.filters + partition.filters
    if partition.level == WHOLE and not _pinned(filters, "device"):
        return DEVICE
    if partition.level in (WHOLE, DEVICE) and not _pinned(filters, "country"):
        return COUNTRY
    return None


def can_split(piece: Slice) -> bool:
    """Whether a capped day of ``piece`` can be split at all (its own filters do not already
    hold both the device and the country to one value)."""
    return next_level(piece, WHOLE_DAY) is not None


def by_device(partition: Partition = WHOLE_DAY) -> list[Partition]:
    """The three device partitions of ``partition``."""
    return [Partition((*partition.filters, Filter("device", "equals", device)), DEVICE)
            for device in DEVICES]


def country_request(piece: Slice, partition: Partition) -> Slice:
    """The one request, grouped by country, that the country split of ``partition`` needs."""
    return replace(partition.request(piece), dimensions=("country",))


def choose_countries(countries: pl.DataFrame, detail_impressions: int,
                     cap: int = ROW_CAP) -> list[str]:
    """The countries of a capped partition that get a partition of their own, largest first.

    ``countries`` is the partition's answer grouped by country (``country``, ``impressions``);
    ``detail_impressions`` the impressions its capped detail rows showed. The partition's rows
    are estimated as ``cap * total impressions / detail impressions``: rows past the cap have
    fewer impressions than the average shown row (which makes it low), and the total includes
    anonymized queries that never become rows (which makes it high). A country's rows are
    estimated by its share of the impressions, because a row is a key that was shown. The fewest
    top countries are chosen that leave the remainder under ``REMAINDER_TARGET`` of the cap,
    and at most ``MAX_COUNTRIES``.
    """
    if countries.height == 0:
        return []
    ranked = countries.sort(["impressions", "country"], descending=[True, False])
    impressions = ranked["impressions"].cast(pl.Float64)
    total = float(impressions.sum())
    if total <= 0:
        return ranked["country"].head(MAX_COUNTRIES).to_list()
    estimated_rows = cap * total / max(float(detail_impressions), 1.0)
    left = estimated_rows * (1.0 - impressions.cum_sum() / total)
    fits = (left <= REMAINDER_TARGET * cap).arg_true()
    count = int(fits[0]) + 1 if fits.len() else ranked.height
    return ranked["country"].head(min(count, MAX_COUNTRIES)).to_list()


def by_country(partition: Partition, countries: list[str]) -> list[Partition]:
    """One ``equals`` partition per country of ``countries``, plus the remainder that excludes
    them all (``notEquals`` filters, ANDed in one group)."""
    names = [c.upper() for c in countries]
    parts = [Partition((*partition.filters, Filter("country", "equals", c)), COUNTRY)
             for c in names]
    rest = tuple(Filter("country", "notEquals", c) for c in names)
    return [*parts, Partition((*partition.filters, *rest), REST)]


@dataclass(frozen=True)
class SplitOutcome:
    """What splitting one capped day did, measured against its unsplit answer.

    ``unsplit_*``: the day's own (capped) answer; ``rows``, ``clicks``, ``impressions``: the
    merged partitions; ``partitions``: how many were fetched in the end; ``capped_partitions``:
    how many of those still reached the cap; ``requests``: the requests the split added.
    """

    unsplit_rows: int
    unsplit_clicks: int
    unsplit_impressions: int
    rows: int
    clicks: int
    impressions: int
    partitions: int
    capped_partitions: int
    requests: int

    @property
    def gained_rows(self) -> int:
        return self.rows - self.unsplit_rows

    @property
    def gained_clicks(self) -> int:
        return self.clicks - self.unsplit_clicks

    @property
    def gained_nothing(self) -> bool:
        """No row and no click recovered: Google applied the filters after its cap here."""
        return self.gained_rows <= 0 and self.gained_clicks <= 0


@dataclass(frozen=True)
class Steps:
    """What to fetch next for a split day: ``partitions`` to page through, and partitions whose
    country split needs their answer grouped by country (:func:`country_request`)."""

    partitions: tuple[Partition, ...] = ()
    countries: tuple[Partition, ...] = ()


class SplitPlan:
    """The partitions of one capped day: what to fetch next, what has arrived, what it gained.

    Created from the day's own capped answer; the engine fetches every partition of
    :attr:`Steps` it is given, hands each complete answer to :meth:`arrived` (and each country
    answer to :meth:`countries`), and once :attr:`done` merges :attr:`parts`. A capped partition
    that can be split further is replaced by its parts (its rows are dropped); one that cannot
    is kept as it is and counted in ``capped_partitions``.
    """

    def __init__(self, piece: Slice, unsplit: pl.DataFrame, cap: int = ROW_CAP) -> None:
        self.piece = piece
        self.cap = cap
        self.unsplit_rows = unsplit.height
        self.unsplit_clicks = int(unsplit["clicks"].sum())
        self.unsplit_impressions = int(unsplit["impressions"].sum())
        self.parts: list[pl.DataFrame] = []
        self.fetched = 0
        self.capped_partitions = 0
        self.requests = 0
        self._pending: set[Partition] = set()
        self._detail: dict[Partition, int] = {}

    @property
    def done(self) -> bool:
        """Whether every partition has arrived (the day can be merged and committed)."""
        return not self._pending

    def begin(self) -> Steps:
        """The first partitions to fetch (the day's own answer counts as arrived, capped)."""
        return self._split(WHOLE_DAY, self.unsplit_impressions)

    def arrived(self, partition: Partition, frame: pl.DataFrame) -> Steps:
        """A partition's complete answer: keep it, or split it further if it is capped."""
        self._pending.discard(partition)
        self.fetched += 1
        if frame.height >= self.cap and next_level(self.piece, partition) is not None:
            return self._split(partition, int(frame["impressions"].sum()))
        if frame.height >= self.cap:
            self.capped_partitions += 1
        self.parts.append(frame)
        return Steps()

    def countries(self, partition: Partition, frame: pl.DataFrame) -> Steps:
        """A capped partition's answer grouped by country: its country partitions."""
        self._pending.discard(partition)
        chosen = choose_countries(frame, self._detail.pop(partition), self.cap)
        return self._expect(Steps(partitions=tuple(by_country(partition, chosen))))

    def outcome(self, merged: pl.DataFrame) -> SplitOutcome:
        """What the split did, given the merged rows of :attr:`parts`."""
        return SplitOutcome(
            unsplit_rows=self.unsplit_rows, unsplit_clicks=self.unsplit_clicks,
            unsplit_impressions=self.unsplit_impressions, rows=merged.height,
            clicks=int(merged["clicks"].sum()), impressions=int(merged["impressions"].sum()),
            partitions=len(self.parts), capped_partitions=self.capped_partitions,
            requests=self.requests)

    def _split(self, partition: Partition, impressions: int) -> Steps:
        level = next_level(self.piece, partition)
        if level is None:
            raise ValueError(f"{self.piece.key}: {partition.label} cannot be split further")
        if level == DEVICE:
            return self._expect(Steps(partitions=tuple(by_device(partition))))
        self._detail[partition] = impressions
        return self._expect(Steps(countries=(partition,)))

    def _expect(self, steps: Steps) -> Steps:
        self._pending.update(steps.partitions)
        self._pending.update(steps.countries)
        return steps


SPLIT_MODES = ("auto", "off")
RETRY_AFTER_DAYS = 28
"""A stream whose last split gained nothing is not split again for this many days (by fetch
time), then tried once more, in case Google changed how it caps."""


def gained_nothing(stream: str, day: date, partitions: int) -> str:
    """Why a stream stopped splitting: a split of ``day`` into ``partitions`` gained nothing."""
    return (f"splitting stopped for {stream} after {day}: splitting it into {partitions} parts "
            "recovered no row and no click (Google applies filters after its row cap on this "
            f"property); capped days are fetched whole, and tried again after "
            f"{RETRY_AFTER_DAYS} days")


class SplitPolicy:
    """Which capped days are split, and the streams on which splitting stopped, with why.

    ``mode``: ``auto`` splits every capped day that can be split; ``off`` none. ``stopped``
    maps a stream (:attr:`Slice.stream`) to the reason it no longer splits, e.g. from the
    ledger's history of an earlier run. A split that gains nothing stops its stream for the
    days that are split after it (:meth:`measured`).
    """

    def __init__(self, mode: str = "auto",
                 stopped: dict[tuple[str, str, str, str], str] | None = None) -> None:
        if mode not in SPLIT_MODES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
        self.mode = mode
        self.stopped = dict(stopped or {})
        self._notes: dict[tuple[str, str, str, str], str] = dict(self.stopped)

    def applies(self, piece: Slice) -> bool:
        """Whether a capped day of ``piece`` is to be split."""
        return self.mode == "auto" and piece.stream not in self.stopped and can_split(piece)

    def why_not(self, piece: Slice) -> str:
        """Why a capped day of ``piece`` is not split (for the ledger's ``split_note``)."""
        if self.mode == "off":
            return "splitting is off"
        if piece.stream in self.stopped:
            return self.stopped[piece.stream]
        return "its filters already hold the device and the country to one value"

    def measured(self, piece: Slice, outcome: SplitOutcome) -> str | None:
        """Take a split's outcome into account; return the note if it stopped the stream."""
        if not outcome.gained_nothing or piece.stream in self.stopped:
            return None
        note = gained_nothing(stream_name(piece.stream), piece.day, outcome.partitions)
        self.stopped[piece.stream] = note
        self._notes[piece.stream] = note
        return note

    def refused(self, piece: Slice, error: BaseException) -> str:
        """The API refused a partition's request (a 400): the day keeps its unsplit answer and
        the stream stops splitting; return the note."""
        note = (f"splitting stopped for {stream_name(piece.stream)} on {piece.day}: the API "
                f"refused a partition ({error})")
        self.stopped.setdefault(piece.stream, note)
        self._notes.setdefault(piece.stream, note)
        return note

    @property
    def notes(self) -> tuple[str, ...]:
        """Why splitting stopped, one line per stream that stopped."""
        return tuple(self._notes.values())


def stream_name(stream: tuple[str, str, str, str]) -> str:
    """``site search_type (dimensions)`` plus the filters if any: how reports name a stream
    (:attr:`Slice.stream`)."""
    site, search_type, dimensions, filters = stream
    name = f"{site} {search_type} ({dimensions})"
    return f"{name} {filters}" if filters else name
