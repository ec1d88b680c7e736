"""The limits' arithmetic without a network: timetables as admins write them, and the shared
timeline of turns that holds a rate whatever the number of senders."""

from __future__ import annotations

import pytest

from s3pvefs.config.bwlimit import UNLIMITED, parse_bwlimit
from s3pvefs.errors import ConfigError
from s3pvefs.store.throttle import (
    BURST,
    MIN_CHUNK,
    Bandwidth,
    RequestRate,
    TrafficLimits,
)

MiB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("text", ["off", "OFF", "0", "", "none"])
def test_off_is_no_limit(text):
    assert parse_bwlimit(text) == UNLIMITED
    assert not parse_bwlimit(text).limited


@pytest.mark.parametrize("text", ["20MiB", "20M", "20MiB/s", 20 * MiB])
def test_a_rate_holds_all_day(text):
    table = parse_bwlimit(text)
    assert all(table.rate_at(minute) == 20 * MiB for minute in (0, 600, 1439))
    assert table.describe() == "20.0 MiB/s"


def test_a_timetable_changes_the_rate_through_the_day():
    table = parse_bwlimit("19:00,off 08:00,20MiB 12:30,5MiB")
    assert table.describe() == "08:00,20.0 MiB/s 12:30,5.0 MiB/s 19:00,off"
    assert table.rate_at(7 * 60 + 59) is None  # before the first entry: the day's last holds
    assert table.rate_at(8 * 60) == 20 * MiB
    assert table.rate_at(12 * 60 + 29) == 20 * MiB
    assert table.rate_at(12 * 60 + 30) == 5 * MiB
    assert table.rate_at(19 * 60) is None
    assert parse_bwlimit("08:00,1MiB").rate_at(0) == MiB  # one entry: all day


@pytest.mark.parametrize("text, message", [
    ("8am,20MiB", "TIME,RATE"),
    ("08:00", "invalid size"),  # no comma: taken as a rate
    ("08:00,20MiB 08:00,off", "given twice"),
    ("25:00,1MiB", "TIME,RATE"),
    ("08:00,fast", "invalid size"),
    ("100", "below 1 KiB/s"),
    (True, "expected a rate"),
])
def test_bad_limits_are_refused_with_what_to_write(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_bwlimit(text, "[upload] bwlimit")


def test_turns_hold_the_rate_for_any_number_of_senders():
    clock = Clock()
    limit = Bandwidth(parse_bwlimit("1MiB"), clock=clock, minute=lambda: 0)
    # Ten senders asking at once for 1 MiB each: together they wait 10 s, less the burst.
    waits = [limit.reserve(MiB) for _ in range(10)]
    assert waits == pytest.approx([n + 1 - BURST for n in range(10)])
    clock.now += 100  # idle a long time: only a burst's worth comes back
    assert limit.reserve(MiB) == pytest.approx(1 - BURST)


def test_a_limit_changed_while_mounted_forgets_the_old_turns():
    clock = Clock()
    limit = Bandwidth(parse_bwlimit("16KiB"), clock=clock, minute=lambda: 0)
    assert limit.reserve(MiB) > 60  # a minute's worth reserved at the old rate
    limit.replace(parse_bwlimit("off"))
    assert limit.reserve(MiB) == 0 and limit.rate() is None
    limit.replace(parse_bwlimit("1MiB"))
    assert limit.reserve(MiB) == pytest.approx(1 - BURST)


def test_the_timetable_in_force_decides():
    minute = [9 * 60]
    limit = Bandwidth(parse_bwlimit("08:00,1MiB 19:00,off"), clock=Clock(),
                      minute=lambda: minute[0])
    assert limit.rate() == MiB
    minute[0] = 20 * 60
    assert limit.rate() is None and limit.reserve(100 * MiB) == 0


def test_chunks_are_small_at_low_rates():
    limit = Bandwidth(parse_bwlimit("64KiB"), clock=Clock(), minute=lambda: 0)
    assert limit.chunk(MiB) == MIN_CHUNK
    assert Bandwidth(parse_bwlimit("80MiB"), minute=lambda: 0).chunk(MiB) == MiB
    assert Bandwidth(UNLIMITED).chunk(MiB) == MiB


def test_a_request_rate_spaces_request_starts():
    clock = Clock()
    rate = RequestRate(10, clock=clock)
    waits = [rate.reserve(1) for _ in range(5)]
    assert waits == pytest.approx([max(0.0, (n + 1) / 10 - BURST) for n in range(5)])
    assert RequestRate(0).reserve(1) == 0


def test_settings_change_by_name(caplog):
    limits = TrafficLimits(Bandwidth(UNLIMITED), Bandwidth(UNLIMITED), RequestRate(0))
    limits.change("bwlimit", "2MiB")
    assert limits.describe() == {"upload.bwlimit": "2.0 MiB/s", "download.bwlimit": "2.0 MiB/s",
                                 "max_request_rate": 0}
    limits.change("download.bwlimit", "off")
    limits.change("max_request_rate", "50")
    assert limits.describe() == {"upload.bwlimit": "2.0 MiB/s", "download.bwlimit": "off",
                                 "max_request_rate": 50.0}
    with pytest.raises(ConfigError, match="unknown setting"):
        limits.change("speed", "1")
    with pytest.raises(ConfigError, match="negative"):
        limits.change("max_request_rate", "-1")
