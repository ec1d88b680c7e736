"""Rate limits of a mount's traffic: bytes sent, bytes received (each a timetable of the day,
config/bwlimit.py) and requests started.

A ``RateLimit`` hands out turns on one timeline: whoever wants to send ``n`` units reserves the
next n/rate seconds of it and waits until that stretch has passed. Every sender shares the
timeline, so what all of them send together holds the rate, whatever their number; a short
burst (``BURST`` seconds of unused turns) is let through so that an idle link starts at once.
``reserve`` only computes the wait: each caller sleeps in its own event loop (asyncio for the
chunks aiohttp sends and receives, trio for whole request bodies and request starts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from s3pvefs.config.bwlimit import Timetable, parse_bwlimit
from s3pvefs.config.settings import Config
from s3pvefs.config.values import parse_float
from s3pvefs.errors import ConfigError

log = logging.getLogger(__name__)

BURST = 0.25  # seconds of turns an idle limit may hand out at once
MIN_CHUNK = 16 * 1024  # bytes per turn at low rates (a turn never waits many seconds)


def minute_of_day() -> int:
    now = time.localtime()
    return now.tm_hour * 60 + now.tm_min


class RateLimit:
    def __init__(self, rate_now: Callable[[], float | None],
                 clock: Callable[[], float] = time.monotonic):
        self._rate_now = rate_now  # units per second in force now; None: no limit
        self._clock = clock
        self._lock = threading.Lock()  # reserved from the asyncio thread and the trio thread
        self._next = 0.0  # where the timeline's free turns start

    def rate(self) -> float | None:
        return self._rate_now()

    def reserve(self, units: float) -> float:
        """Take the next ``units`` turns; the seconds to wait before using them."""
        rate = self._rate_now()
        if rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            self._next = max(self._next, now - BURST) + units / rate
            return max(0.0, self._next - now)

    def restart(self) -> None:
        """Forget turns reserved at an old rate (a limit changed while the mount runs)."""
        with self._lock:
            self._next = 0.0

    def chunk(self, largest: int) -> int:
        """Bytes to send per turn: at most ``largest``, an eighth of a second's worth when the
        rate is low (servers drop a request whose body stalls for long)."""
        rate = self._rate_now()
        if rate is None:
            return largest
        return max(MIN_CHUNK, min(largest, int(rate / 8)))


class Bandwidth(RateLimit):
    """The limit of one direction, from a timetable that can be replaced while the mount
    runs (`s3pvefs set MOUNTPOINT bwlimit ...`)."""

    def __init__(self, timetable: Timetable, clock: Callable[[], float] = time.monotonic,
                 minute: Callable[[], int] = minute_of_day):
        self.timetable = timetable
        self._minute = minute
        super().__init__(self._rate_in_force, clock)

    def _rate_in_force(self) -> float | None:
        return self.timetable.rate_at(self._minute()) if self.timetable.limited else None

    def replace(self, timetable: Timetable) -> None:
        self.timetable = timetable
        self.restart()


class RequestRate(RateLimit):
    """At most ``per_second`` request starts per second (0: no cap); changeable while the
    mount runs."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic):
        self.per_second = per_second
        super().__init__(lambda: self.per_second or None, clock)

    def replace(self, per_second: float) -> None:
        self.per_second = per_second
        self.restart()


@dataclass
class TrafficLimits:
    """The limits of one mount: made from its configuration, shared by its store (which
    applies them) and its admin socket (`s3pvefs set` changes them)."""

    upload: Bandwidth
    download: Bandwidth
    requests: RequestRate

    @classmethod
    def from_config(cls, config: Config) -> TrafficLimits:
        return cls(Bandwidth(config.upload_bwlimit), Bandwidth(config.download_bwlimit),
                   RequestRate(config.max_request_rate))

    def change(self, setting: str, value: str) -> None:
        """Apply `s3pvefs set MOUNTPOINT SETTING VALUE`; ConfigError when it is not one."""
        if setting in ("bwlimit", "upload.bwlimit", "download.bwlimit"):
            timetable = parse_bwlimit(value, setting)
            if setting != "download.bwlimit":
                self.upload.replace(timetable)
            if setting != "upload.bwlimit":
                self.download.replace(timetable)
        elif setting == "max_request_rate":
            rate = parse_float(value, setting)
            if rate < 0:
                raise ConfigError(f"{setting}: cannot be negative (0: no cap)")
            self.requests.replace(rate)
        else:
            raise ConfigError(f"unknown setting {setting!r} (one of: {', '.join(SETTINGS)})")
        log.info("%s set to %s while mounted", setting, value)

    def describe(self) -> dict[str, str | float]:
        return {"upload.bwlimit": self.upload.timetable.describe(),
                "download.bwlimit": self.download.timetable.describe(),
                "max_request_rate": self.requests.per_second}


SETTINGS = ("bwlimit", "upload.bwlimit", "download.bwlimit", "max_request_rate")
