"""S3 Object Lock retention of new objects, per content directory: the ``[retention]``
settings (``mode`` and one duration per directory) and what they give a key.

A directory's objects get, when they are created (PutObject, CreateMultipartUpload,
CopyObject), the retention mode and a retain-until date that many seconds after the request.
s3pvefs's own objects (attribute indexes, kept-aside copies, check probes) never do: they are
rewritten often and would pile up as locked versions.
"""

from __future__ import annotations

import re
from typing import Any

from s3pvefs.config.s3options import normalise_content_dir
from s3pvefs.errors import ConfigError

GOVERNANCE, COMPLIANCE = "GOVERNANCE", "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([hdwy])\s*$", re.IGNORECASE)
MAX_SECONDS = 100 * 365 * 86400  # S3 refuses retain-until dates beyond a century or so


def parse_retention_mode(value: Any, label: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in MODES:
        raise ConfigError(f"{label}: expected \"governance\" or \"compliance\", got {value!r}")
    return value.strip().upper()


def parse_duration(value: Any, label: str) -> int:
    """"30d", "12h", "2w", "1y" -> seconds (whole hours at least: S3 keeps dates, not timers);
    seconds already converted stay as they are."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _DURATION_RE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigError(f"{label}: expected a duration such as \"30d\" (h, d, w or y), "
                              f"got {value!r}")
        seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 0 < seconds <= MAX_SECONDS:
        raise ConfigError(f"{label}: {value!r} is out of range (1h to 100y)")
    return seconds


def parse_retention_map(value: Any, label: str) -> dict[str, int]:
    """Directory -> seconds, from a TOML table or a flag value such as "dump=30d,template=7d"."""
    if isinstance(value, str):
        value = dict(_pair(item, label) for item in value.split(",") if item.strip())
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: expected directory = \"DURATION\" entries "
                          f"(e.g. dump = \"30d\")")
    return {normalise_content_dir(str(directory), f"{label} entry {directory!r}"):
            parse_duration(duration, f"{label} entry {directory!r}")
            for directory, duration in value.items()}


def _pair(item: str, label: str) -> tuple[str, str]:
    directory, equals, duration = item.partition("=")
    if not equals:
        raise ConfigError(f"{label}: expected DIR=DURATION[,DIR=DURATION...] such as dump=30d, "
                          f"got {item.strip()!r}")
    return directory.strip(), duration.strip()


def retention_for(relative_key: str, by_dir: dict[str, int]) -> int | None:
    """Seconds a new object at this key is retained: the longest configured directory that
    holds it wins; None when none does."""
    best = max((d for d in by_dir if relative_key.startswith(d)), key=len, default=None)
    return by_dir[best] if best is not None else None
