"""When a maintenance window is in effect: one-off spans, cron in a time zone,
and the two nights a year the clocks change (Europe/Berlin, 2026: forward
on 29 March at 02:00, back on 25 October at 03:00)."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from app.services.maintenance import Occurrence, Schedule, to_utc

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def nightly(minutes=60, cron="30 2 * * *") -> Schedule:
    return Schedule(cron_expression=cron, time_zone="Europe/Berlin", duration_minutes=minutes)


def test_a_one_off_window_covers_its_start_but_not_its_end():
    window = Schedule(starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 12))
    assert window.occurrence_at(utc(2026, 5, 1, 9, 59, 59)) is None
    assert window.occurrence_at(utc(2026, 5, 1, 10)) == Occurrence(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    assert window.occurrence_at(utc(2026, 5, 1, 11, 59, 59)) is not None
    assert window.occurrence_at(utc(2026, 5, 1, 12)) is None
    assert window.next_after(utc(2026, 5, 1, 9)).starts_at == utc(2026, 5, 1, 10)
    assert window.next_after(utc(2026, 5, 1, 10)) is None


def test_a_recurring_window_reads_cron_in_its_time_zone():
    window = nightly()
    # 02:30 in Berlin in winter is 01:30 UTC; in summer 00:30 UTC.
    assert window.occurrence_at(utc(2026, 1, 15, 1, 30)) == Occurrence(utc(2026, 1, 15, 1, 30), utc(2026, 1, 15, 2, 30))
    assert window.occurrence_at(utc(2026, 1, 15, 2, 30)) is None
    assert window.occurrence_at(utc(2026, 1, 15, 1, 29, 59)) is None
    assert window.occurrence_at(utc(2026, 7, 15, 0, 45)).starts_at == utc(2026, 7, 15, 0, 30)
    assert window.occurrence_at(utc(2026, 7, 15, 1, 45)) is None
    assert window.next_after(utc(2026, 7, 15, 0, 45)).starts_at == utc(2026, 7, 16, 0, 30)


def test_a_start_in_the_skipped_hour_begins_when_the_clocks_jump():
    window = nightly()
    # 02:30 does not exist on 29 March: it begins at 03:00 summer time (01:00 UTC).
    assert to_utc(datetime(2026, 3, 29, 2, 30), BERLIN) == utc(2026, 3, 29, 1)
    assert window.next_after(utc(2026, 3, 28, 12)) == Occurrence(utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    assert window.occurrence_at(utc(2026, 3, 29, 0, 59)) is None
    assert window.occurrence_at(utc(2026, 3, 29, 1, 59)) is not None
    # The nights around it keep their own offsets.
    assert window.next_after(utc(2026, 3, 27, 12)).starts_at == utc(2026, 3, 28, 1, 30)
    assert window.next_after(utc(2026, 3, 29, 12)).starts_at == utc(2026, 3, 30, 0, 30)


def test_a_start_in_the_repeated_hour_begins_once_at_its_first_pass():
    window = nightly(minutes=30)
    # 02:30 happens twice on 25 October: 00:30 UTC (summer time), then 01:30 UTC.
    assert window.next_after(utc(2026, 10, 24, 12)) == Occurrence(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1))
    assert window.occurrence_at(utc(2026, 10, 25, 0, 40)) is not None
    assert window.occurrence_at(utc(2026, 10, 25, 1, 40)) is None  # 02:40 again, second pass: nothing
    assert window.next_after(utc(2026, 10, 25, 0, 40)).starts_at == utc(2026, 10, 26, 1, 30)


def test_an_occurrence_from_the_first_pass_still_runs_during_the_second():
    window = nightly(minutes=90)  # 00:30 to 02:00 UTC on 25 October
    # 01:10 UTC reads 02:10 on the wall clock, before 02:30, yet the window runs.
    assert window.occurrence_at(utc(2026, 10, 25, 1, 10)) == Occurrence(utc(2026, 10, 25, 0, 30),
                                                                        utc(2026, 10, 25, 2))
    assert window.occurrence_at(utc(2026, 10, 25, 2)) is None


def test_a_duration_is_elapsed_time_across_the_change():
    window = nightly(minutes=120, cron="0 1 * * *")
    # 01:00 summer time is 23:00 UTC; two hours later it is 02:00 winter time.
    found = window.occurrence_at(utc(2026, 10, 25, 0, 59))
    assert found == Occurrence(utc(2026, 10, 24, 23), utc(2026, 10, 25, 1))
    assert found.ends_at - found.starts_at == timedelta(hours=2)


def test_weekday_windows_follow_the_offset_across_the_weekend_it_changes():
    window = Schedule(cron_expression="0 9 * * 1-5", time_zone="Europe/Berlin", duration_minutes=15)
    assert window.next_after(utc(2026, 3, 27, 0)).starts_at == utc(2026, 3, 27, 8)   # Friday, winter time
    assert window.next_after(utc(2026, 3, 27, 9)).starts_at == utc(2026, 3, 30, 7)   # Monday, summer time


def test_occurrences_between_two_times():
    window = nightly()
    found = window.occurrences(utc(2026, 1, 1, 2), utc(2026, 1, 4, 0))
    # The one running at the start, then each night's.
    assert [o.starts_at for o in found] == [utc(2026, 1, 1, 1, 30), utc(2026, 1, 2, 1, 30), utc(2026, 1, 3, 1, 30)]
    assert Schedule(starts_at=utc(2026, 1, 1), ends_at=utc(2026, 1, 2)).occurrences(utc(2026, 2, 1), utc(2026, 3, 1)) == []
