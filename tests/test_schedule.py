"""Scheduling arithmetic: time zones, daylight saving, catch-up, and the manual clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cogs.digests.schedule import (
    ManualClock,
    Schedule,
    ScheduleError,
    SystemClock,
    make_schedule,
    next_run,
    parse_at,
    parse_timezone,
    parse_weekday,
    plan_run,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


def runs(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out, moment = [], start
    for _ in range(count):
        moment = next_run(schedule, moment)
        out.append(moment)
    return out


def test_parse_at_accepts_24_hour_times() -> None:
    assert parse_at("08:30") == time(8, 30)
    assert parse_at(" 7:05 ") == time(7, 5)
    assert parse_at("23:59") == time(23, 59)


@pytest.mark.parametrize("bad", ["24:00", "8", "08:60", "8.30", "", "noon"])
def test_parse_at_rejects_with_example(bad: str) -> None:
    with pytest.raises(ScheduleError, match="08:30"):
        parse_at(bad)


def test_parse_timezone_canonicalises_case() -> None:
    assert parse_timezone("europe/berlin") == "Europe/Berlin"
    assert parse_timezone("UTC") == "UTC"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "CEST+2", "../etc/passwd"])
def test_parse_timezone_rejects_with_example(bad: str) -> None:
    with pytest.raises(ScheduleError, match="Europe/Berlin"):
        parse_timezone(bad)


def test_parse_weekday() -> None:
    assert parse_weekday("Monday") == 0
    assert parse_weekday("sun") == 6
    with pytest.raises(ScheduleError):
        parse_weekday("funday")


def test_daily_next_run_in_zone() -> None:
    s = make_schedule("daily", "09:00", "America/New_York", None, datetime(2024, 6, 1, tzinfo=UTC))
    # 2024-06-03 12:00 UTC is 08:00 in New York (EDT, -4): the run is 09:00 local the same day.
    assert next_run(s, datetime(2024, 6, 3, 12, 0, tzinfo=UTC)) == local(NEW_YORK, 2024, 6, 3, 9, 0)
    # Exactly at the run time: strictly after, so tomorrow.
    assert next_run(s, local(NEW_YORK, 2024, 6, 3, 9, 0)) == local(NEW_YORK, 2024, 6, 4, 9, 0)


def test_next_run_is_utc() -> None:
    s = make_schedule("daily", "09:00", "Asia/Tokyo", None, datetime(2024, 6, 1, tzinfo=UTC))
    result = next_run(s, datetime(2024, 6, 3, 1, 0, tzinfo=UTC))
    assert result.tzinfo == UTC
    assert result == datetime(2024, 6, 4, 0, 0, tzinfo=UTC)  # 09:00 JST = 00:00 UTC


def test_spring_forward_runs_once_at_shifted_time() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 -> 03:00. 02:30 does not exist that day.
    s = make_schedule("daily", "02:30", "Europe/Berlin", None, datetime(2024, 3, 1, tzinfo=UTC))
    got = runs(s, local(BERLIN, 2024, 3, 30, 12, 0), 3)
    assert got[0] == local(BERLIN, 2024, 3, 31, 3, 30)  # shifted by the one-hour gap
    assert got[0] == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert got[1] == local(BERLIN, 2024, 4, 1, 2, 30)
    assert got[2] == local(BERLIN, 2024, 4, 2, 2, 30)
    # Exactly one run on the local day of the change.
    assert sum(1 for r in got if r.astimezone(BERLIN).date().isoformat() == "2024-03-31") == 1


def test_spring_forward_from_inside_the_day() -> None:
    s = make_schedule("daily", "02:30", "Europe/Berlin", None, datetime(2024, 3, 1, tzinfo=UTC))
    # 03:10 local on the change day: the shifted 03:30 run is still ahead.
    assert next_run(s, local(BERLIN, 2024, 3, 31, 3, 10)) == local(BERLIN, 2024, 3, 31, 3, 30)


def test_fall_back_runs_once() -> None:
    # Europe/Berlin, 2024-10-27: 03:00 -> 02:00. 02:30 happens twice that day.
    s = make_schedule("daily", "02:30", "Europe/Berlin", None, datetime(2024, 10, 1, tzinfo=UTC))
    got = runs(s, local(BERLIN, 2024, 10, 26, 12, 0), 3)
    assert got[0] == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # first 02:30 (CEST, +2)
    assert got[1] == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)  # 02:30 CET, +1
    on_change_day = [r for r in got if r.astimezone(BERLIN).date().isoformat() == "2024-10-27"]
    assert len(on_change_day) == 1
    # Asked again from between the two 02:30s, it does not run a second time that day.
    assert next_run(s, datetime(2024, 10, 27, 1, 0, tzinfo=UTC)) == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)


def test_daily_runs_24_or_23_or_25_hours_apart_around_dst() -> None:
    s = make_schedule("daily", "09:00", "Europe/Berlin", None, datetime(2024, 3, 1, tzinfo=UTC))
    got = runs(s, local(BERLIN, 2024, 3, 29, 12, 0), 3)
    gaps = [(b - a) for a, b in zip(got, got[1:])]
    assert gaps == [timedelta(hours=23), timedelta(hours=24)]
    assert all(r.astimezone(BERLIN).time() == time(9, 0) for r in got)


def test_weekly_defaults_to_creation_weekday_in_its_zone() -> None:
    # 2024-06-02 23:30 UTC is Monday 01:30 in Berlin: the weekday is Monday, not Sunday.
    created = datetime(2024, 6, 2, 23, 30, tzinfo=UTC)
    s = make_schedule("weekly", "18:00", "Europe/Berlin", None, created)
    assert s.weekday == 0
    got = runs(s, created, 2)
    assert got[0] == local(BERLIN, 2024, 6, 3, 18, 0)
    assert got[1] == local(BERLIN, 2024, 6, 10, 18, 0)


def test_weekly_explicit_weekday() -> None:
    s = make_schedule("weekly", "07:00", "UTC", "friday", datetime(2024, 6, 3, tzinfo=UTC))
    assert next_run(s, datetime(2024, 6, 3, tzinfo=UTC)) == datetime(2024, 6, 7, 7, 0, tzinfo=UTC)


def test_weekly_across_fall_back() -> None:
    s = make_schedule("weekly", "02:30", "Europe/Berlin", "sunday", datetime(2024, 10, 1, tzinfo=UTC))
    got = runs(s, local(BERLIN, 2024, 10, 20, 12, 0), 2)
    assert got == [datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 11, 3, 1, 30, tzinfo=UTC)]


def test_make_schedule_rejects_bad_combinations() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="daily, weekly"):
        make_schedule("hourly", "08:00", "UTC", None, now)
    with pytest.raises(ScheduleError, match="weekly"):
        make_schedule("daily", "08:00", "UTC", "monday", now)


def test_naive_datetimes_are_refused() -> None:
    s = make_schedule("daily", "08:00", "UTC", None, datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        next_run(s, datetime(2024, 1, 1))


def test_catch_up_after_downtime_runs_once_and_skips_ahead() -> None:
    s = make_schedule("daily", "08:00", "UTC", None, datetime(2024, 1, 1, tzinfo=UTC))
    scheduled = datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
    last = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    now = datetime(2024, 1, 6, 9, 15, tzinfo=UTC)  # down for four and a bit days
    plan = plan_run(s, scheduled, last, datetime(2024, 1, 1, tzinfo=UTC), now)
    assert plan.next_run_at == datetime(2024, 1, 7, 8, 0, tzinfo=UTC)  # the next one after now
    assert plan.missed == 4  # Jan 3, 4, 5, 6 folded into this run
    assert plan.window_end == now
    assert plan.window_start == now - timedelta(days=3)  # capped, not all the way to the last run


def test_on_time_run_window_is_since_last_run() -> None:
    s = make_schedule("daily", "08:00", "UTC", None, datetime(2024, 1, 1, tzinfo=UTC))
    scheduled = datetime(2024, 1, 2, 8, 0, tzinfo=UTC)
    plan = plan_run(s, scheduled, datetime(2024, 1, 1, 8, 0, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), scheduled)
    assert plan.window_start == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert plan.next_run_at == datetime(2024, 1, 3, 8, 0, tzinfo=UTC)
    assert plan.missed == 0


def test_first_run_window_starts_at_creation() -> None:
    created = datetime(2024, 1, 1, 20, 0, tzinfo=UTC)
    s = make_schedule("daily", "08:00", "UTC", None, created)
    scheduled = next_run(s, created)
    plan = plan_run(s, scheduled, None, created, scheduled)
    assert plan.window_start == created


def test_describe() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert make_schedule("daily", "8:05", "UTC", None, now).describe() == "every day at 08:05 (UTC)"
    assert "Friday at 07:00" in make_schedule("weekly", "07:00", "UTC", "fri", now).describe()


async def test_manual_clock_wakes_sleeper_at_deadline() -> None:
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
    sleeper = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0)
    assert clock.sleeping == 1
    clock.advance(timedelta(minutes=30))
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(timedelta(minutes=30))
    await asyncio.wait_for(sleeper, 1)
    assert clock.sleeping == 0


async def test_manual_clock_sleep_can_be_cancelled() -> None:
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
    sleeper = asyncio.create_task(clock.sleep(60))
    await asyncio.sleep(0)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.sleeping == 0


async def test_manual_clock_refuses_to_go_back() -> None:
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        clock.set(datetime(2023, 1, 1, tzinfo=UTC))


async def test_system_clock_caps_long_sleeps() -> None:
    clock = SystemClock()
    clock.max_slice_s = 0.01
    await asyncio.wait_for(clock.sleep(3600), 1)
    await asyncio.wait_for(clock.sleep(-5), 1)
