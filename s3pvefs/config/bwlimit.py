"""Bandwidth limits as admins write them: a rate, "off", or a timetable of the day.

    bwlimit = "20MiB"                     20 MiB/s all day ("/s" may follow: "20MiB/s")
    bwlimit = "off"                       no limit (the default)
    bwlimit = "08:00,20MiB 19:00,off"     20 MiB/s from 08:00, unlimited from 19:00; before
                                          08:00 the day's last entry (19:00, off) holds

Times are the host's local time of day. A ``Timetable`` only says which rate holds when; the
store's throttle (store/throttle.py) applies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from s3pvefs.config.values import human_size, parse_size
from s3pvefs.errors import ConfigError

_OFF = ("off", "none", "unlimited", "0", "")
_TIME_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True)
class Timetable:
    """(minute of the day, bytes per second or None for no limit), sorted by minute."""

    entries: tuple[tuple[int, int | None], ...] = ()

    def rate_at(self, minute_of_day: int) -> int | None:
        """The limit in force at that minute (the last entry of the day before the first)."""
        rate = self.entries[-1][1] if self.entries else None
        for start, entry_rate in self.entries:
            if start <= minute_of_day:
                rate = entry_rate
        return rate

    @property
    def limited(self) -> bool:
        return any(rate is not None for _, rate in self.entries)

    def describe(self) -> str:
        if not self.limited:
            return "off"
        if len(self.entries) == 1:
            return _rate_text(self.entries[0][1])
        return " ".join(f"{start // 60:02d}:{start % 60:02d},{_rate_text(rate)}"
                        for start, rate in self.entries)


UNLIMITED = Timetable()


def parse_bwlimit(value: Any, label: str = "bwlimit") -> Timetable:
    """A rate ("20MiB", "20MiB/s", "off") or a timetable ("08:00,20MiB 19:00,off")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{label}: expected a rate such as \"20MiB\" or a timetable such as "
                          f"\"08:00,20MiB 19:00,off\", got {value!r}")
    text = str(value).strip()
    if "," not in text:
        rate = _parse_rate(text, label)
        return UNLIMITED if rate is None else Timetable(((0, rate),))
    entries: dict[int, int | None] = {}
    for item in text.split():
        when, sep, rate_text = item.partition(",")
        match = _TIME_RE.match(when)
        if not sep or match is None:
            raise ConfigError(f"{label}: {item!r} is not TIME,RATE (such as 08:00,20MiB)")
        minute = int(match.group(1)) * 60 + int(match.group(2))
        if minute in entries:
            raise ConfigError(f"{label}: {when} is given twice")
        entries[minute] = _parse_rate(rate_text, label)
    return Timetable(tuple(sorted(entries.items())))


def _parse_rate(text: str, label: str) -> int | None:
    if text.lower() in _OFF:
        return None
    size_text = text[:-2] if text.lower().endswith("/s") else text
    rate = parse_size(size_text, label)
    if rate < 1024:
        raise ConfigError(f"{label}: {text!r} is below 1 KiB/s; write \"off\" for no limit")
    return rate


def _rate_text(rate: int | None) -> str:
    return "off" if rate is None else f"{human_size(rate)}/s"
