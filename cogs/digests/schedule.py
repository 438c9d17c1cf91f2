"""When a digest runs: pure scheduling arithmetic and the clocks the scheduler waits on.

A digest runs at a local wall-clock time (``at``) in an IANA time zone, every
day or once a week. Run times are computed from local *dates* and converted to
UTC, so daylight-saving changes neither skip nor double a run:

- a time that does not exist that day (02:30 on a spring-forward day in
  Europe/Berlin) runs once, shifted forward by the gap (03:30 local);
- a time that exists twice (02:30 on a fall-back day) runs once, at its
  first occurrence.

After downtime, ``plan_run`` runs a missed digest once and schedules the next
run after *now*, not after the missed time, so missed periods are not replayed.

Nothing here imports discord or the database.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

Frequency = Literal["daily", "weekly"]
FREQUENCIES: tuple[Frequency, ...] = ("daily", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PERIODS: dict[str, timedelta] = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# After downtime a digest covers at most this many periods back (it runs once either way).
CATCH_UP_PERIODS = 3

_AT_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


class ScheduleError(ValueError):
    """A schedule option the user typed is not valid. The message says what is allowed."""


@dataclass(frozen=True)
class Schedule:
    every: Frequency
    at: time  # local wall-clock time, minutes precision
    tz: str  # IANA name, already validated
    weekday: int | None = None  # 0 = Monday; weekly schedules only

    def __post_init__(self) -> None:
        if self.every not in FREQUENCIES:
            raise ScheduleError(f"`every` must be one of: {', '.join(FREQUENCIES)}.")
        if self.every == "weekly" and (self.weekday is None or not 0 <= self.weekday <= 6):
            raise ScheduleError("A weekly digest needs a weekday (Monday to Sunday).")
        if self.every == "daily" and self.weekday is not None:
            raise ScheduleError("A daily digest has no weekday.")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def period(self) -> timedelta:
        return PERIODS[self.every]

    def describe(self) -> str:
        when = self.at.strftime("%H:%M")
        if self.every == "weekly" and self.weekday is not None:
            return f"every {WEEKDAYS[self.weekday].capitalize()} at {when} ({self.tz})"
        return f"every day at {when} ({self.tz})"


def parse_at(text: str) -> time:
    """``HH:MM`` (24-hour) -> ``time``. Raises ``ScheduleError`` with an example."""
    match = _AT_RE.match(text or "")
    if not match:
        raise ScheduleError(f"`at` must be a 24-hour time like `08:30` or `18:00`, not `{text}`.")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise ScheduleError(f"`{text}` is not a time of day: use 00:00 to 23:59, for example `08:30`.")
    return time(hour, minute)


def parse_timezone(name: str) -> str:
    """Validate an IANA time zone name; returns its canonical spelling. Raises ``ScheduleError``."""
    cleaned = (name or "").strip()
    if not cleaned:
        raise ScheduleError("`timezone` is empty: use an IANA name such as `Europe/Berlin` or `America/New_York`.")
    # Accept any capitalisation the user types ("europe/berlin") by matching the known names.
    known = {n.lower(): n for n in available_timezones()}
    canonical = known.get(cleaned.lower(), cleaned)
    try:
        ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"`{cleaned}` is not a time zone I know. Use an IANA name such as `Europe/Berlin`, "
            "`America/New_York` or `UTC`."
        ) from None
    return canonical


def parse_weekday(name: str) -> int:
    cleaned = (name or "").strip().lower()
    for index, day in enumerate(WEEKDAYS):
        if cleaned in (day, day[:3]):
            return index
    raise ScheduleError(f"`{name}` is not a weekday: use Monday to Sunday.")


def make_schedule(every: str, at: str, tz: str, weekday: str | None, created: datetime) -> Schedule:
    """Build a validated schedule from what the user typed.

    A weekly digest without an explicit weekday runs on the weekday it was
    created on, in its own time zone.
    """
    every_clean = (every or "").strip().lower()
    if every_clean not in FREQUENCIES:
        raise ScheduleError(f"`every` must be one of: {', '.join(FREQUENCIES)}.")
    at_time = parse_at(at)
    zone = parse_timezone(tz)
    day: int | None = None
    if every_clean == "weekly":
        day = parse_weekday(weekday) if weekday else _aware(created).astimezone(ZoneInfo(zone)).weekday()
    elif weekday:
        raise ScheduleError("`weekday` only applies to weekly digests.")
    return Schedule(every_clean, at_time, zone, day)  # type: ignore[arg-type]


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: scheduling needs timezone-aware datetimes")
    return moment


def occurrence(schedule: Schedule, day: date) -> datetime:
    """The UTC instant of the run on local ``day``.

    ``fold=0`` gives the first of two repeated times (fall-back) and, for a time
    inside a spring-forward gap, the pre-transition offset, which lands after the
    gap by its length (02:30 -> 03:30 in Europe/Berlin).
    """
    local = datetime.combine(day, schedule.at, tzinfo=schedule.zone).replace(fold=0)
    return local.astimezone(timezone.utc)


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first run strictly after ``after`` (aware), in UTC."""
    after = _aware(after).astimezone(timezone.utc)
    # Start one local day early: a zone offset can put yesterday's local run after ``after``.
    day = after.astimezone(schedule.zone).date() - timedelta(days=1)
    for _ in range(16):
        if schedule.every == "daily" or day.weekday() == schedule.weekday:
            candidate = occurrence(schedule, day)
            if candidate > after:
                return candidate
        day += timedelta(days=1)
    raise AssertionError("no run found within 16 days")  # unreachable for daily/weekly


@dataclass(frozen=True)
class RunPlan:
    """What to do when a digest is due at ``now``."""

    window_start: datetime  # read messages from here (exclusive) ...
    window_end: datetime  # ... up to here (inclusive): the moment of the run
    next_run_at: datetime  # stored before the next sleep
    missed: int  # scheduled runs that were due but are folded into this one


def plan_run(schedule: Schedule, scheduled_at: datetime, last_run_at: datetime | None,
             created_at: datetime, now: datetime) -> RunPlan:
    """Plan one run of a due digest (``scheduled_at <= now``).

    The window starts at the previous run (or the creation) but never more than
    ``CATCH_UP_PERIODS`` periods before now, so a bot that was down for a month
    does not summarize a month. The next run is the first one after ``now``.
    """
    now = _aware(now).astimezone(timezone.utc)
    start = _aware(last_run_at or created_at).astimezone(timezone.utc)
    start = max(start, now - schedule.period * CATCH_UP_PERIODS)
    missed = 0
    probe = next_run(schedule, scheduled_at)
    while probe <= now and missed < 1000:
        missed += 1
        probe = next_run(schedule, probe)
    return RunPlan(window_start=start, window_end=now, next_run_at=next_run(schedule, now), missed=missed)


class Clock(Protocol):
    """What the scheduler needs from time: the current instant and a sleep.

    The scheduler makes a sleep interruptible by running it in its own task and
    cancelling that task, so a clock only has to provide a plain sleep.
    """

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time. Long sleeps are cut into slices so a changed wall clock (suspend, NTP) is noticed."""

    max_slice_s = 300.0

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, min(seconds, self.max_slice_s)))


class ManualClock:
    """A clock that moves only when a test calls ``advance``/``set``; sleepers wake when it passes their deadline."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start).astimezone(timezone.utc)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    @property
    def sleeping(self) -> int:
        """How many sleeps are waiting for the clock to move."""
        return sum(1 for _, fut in self._sleepers if not fut.done())

    def set(self, moment: datetime) -> None:
        moment = _aware(moment).astimezone(timezone.utc)
        if moment < self._now:
            raise ValueError("ManualClock does not go backwards")
        self._now = moment
        for deadline, fut in self._sleepers:
            if deadline <= moment and not fut.done():
                fut.set_result(None)

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self._now + timedelta(seconds=seconds), asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)
