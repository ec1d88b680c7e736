"""Setting values as people write them, converted and printed: sizes ("16MiB", binary units),
octal modes ("0644"), booleans, numbers (seconds), strings, secrets and paths.

Each converter takes (value, label) and raises ConfigError naming the label, the way the admin
wrote the setting ("[cache] size in FILE" or "--cache-size"). The TOML layout in ``config.py``
says which converter each setting uses.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from s3pvefs.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
PiB = 1024 * TiB

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": PiB}


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def parse_size(value: Any, label: str = "size") -> int:
    """Bytes from an int or a string like "16MiB", "10G", "512k", "1.5GiB" (binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{label}: expected a size such as 16MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{label}: a size cannot be negative, got {value}")
        return value
    if isinstance(value, float):
        if not 0 <= value < float("inf"):
            raise ConfigError(f"{label}: invalid size {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            number, unit, i, _b = m.groups()
            if unit or not i:  # "i" is only allowed after a unit letter ("Ki"), never alone
                try:
                    return int(Decimal(number) * _UNIT[unit.lower()])
                except InvalidOperation:
                    pass
        raise ConfigError(
            f"{label}: invalid size {value!r} (use bytes or a number with a unit: "
            f"512k, 16MiB, 10G, 1.5GiB; units are binary)"
        )
    raise ConfigError(f"{label}: expected a size such as 16MiB, got {_type_name(value)}")


def parse_mode(value: Any, label: str = "mode") -> int:
    """Permission bits from an octal string ("0644", "644", "0o644") or an int (0o644 in TOML)."""
    if isinstance(value, bool):
        raise ConfigError(f"{label}: expected an octal mode such as \"0644\", got {value!r}")
    if isinstance(value, int):
        digits = str(value)
        if value > 0o777 and set(digits) <= set("01234567") and len(digits) >= 3:
            raise ConfigError(
                f"{label}: {value} is a decimal number (octal {value:o}); write the mode as "
                f"a string \"0{digits}\" or as the TOML octal number 0o{digits}"
            )
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("0o"):
            text = text[2:]
        if not text or not set(text) <= set("01234567"):
            raise ConfigError(
                f"{label}: invalid mode {value!r} (use octal digits such as \"0644\" or \"755\")"
            )
        mode = int(text, 8)
    else:
        raise ConfigError(f"{label}: expected an octal mode such as \"0644\", got {_type_name(value)}")
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"{label}: mode {value!r} is out of range (0000 to 7777 octal)")
    return mode


def parse_bool(value: Any, label: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    raise ConfigError(f"{label}: expected true or false, got {value!r}")


def parse_int(value: Any, label: str = "value") -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{label}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ConfigError(f"{label}: expected an integer, got {value!r}")


def parse_float(value: Any, label: str = "value") -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{label}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ConfigError(f"{label}: expected a number of seconds, got {value!r}") from None
    else:
        raise ConfigError(f"{label}: expected a number, got {_type_name(value)}")
    if result != result or result in (float("inf"), float("-inf")):
        raise ConfigError(f"{label}: expected a finite number, got {value!r}")
    return result


def parse_str(value: Any, label: str = "value") -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {_type_name(value)} {value!r}")
    return value


def parse_secret(value: Any, label: str = "value") -> str:
    """Like parse_str, but never repeats the value in the error message."""
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {_type_name(value)}")
    return value


def parse_path(value: Any, label: str = "value") -> Path:
    if isinstance(value, Path):
        text = str(value)
    else:
        text = parse_str(value, label)
    if not text.strip():
        raise ConfigError(f"{label}: the path is empty")
    if "\0" in text:
        raise ConfigError(f"{label}: the path contains a NUL character")
    return Path(text).expanduser().absolute()


def parse_listen(value: Any, label: str = "listen") -> tuple[str, int] | None:
    """"HOST:PORT", "[V6]:PORT" or a PORT alone (on 127.0.0.1); "" or "off": None."""
    text = parse_str(value, label).strip() if not isinstance(value, int) else str(value)
    if text in ("", "off"):
        return None
    host, _, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = (host[1:-1] if bracketed else host) or "127.0.0.1"
    unbracketed_v6 = ":" in host and not bracketed
    if (not port.isdigit() or not 0 < int(port) < 65536 or unbracketed_v6
            or any(c in host for c in "[] /")):
        raise ConfigError(f"{label}: expected HOST:PORT (127.0.0.1:9598, [::1]:9598) or a "
                          f"port, got {value!r}")
    return host, int(port)


# --------------------------------------------------------------------------------------------
# Sizes for people

def human_size(count: float) -> str:
    """A byte count for people: "512 B", "16.0 MiB", "1.5 GiB"."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_size(n: int) -> str:
    """A size as validation messages give it: "16 MiB" when it is a whole number of units."""
    for unit, factor in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n} bytes"
