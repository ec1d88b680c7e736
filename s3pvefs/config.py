"""Mount configuration: one dataclass, filled from a TOML file and command-line flags.

`load_config(file, overrides)` reads the TOML file (standard library `tomllib`), applies the
flag values (the ones that are not None win), converts every value (sizes such as "16MiB",
modes such as "0644") and validates the result. Every problem is a `ConfigError` whose message
names the setting the way the admin wrote it ("[cache] size in FILE" or "--cache-size").

Credentials from the environment (AWS_ACCESS_KEY_ID, ...) are deliberately not copied into the
Config: when it has no explicit keys the store uses the standard AWS credential chain.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import ConfigError
from .s3options import (
    parse_sse,
    parse_storage_class,
    parse_storage_class_map,
    sse_c_key_text,
    validate_object_options,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
PiB = 1024 * TiB


@dataclass
class Config:
    # S3 endpoint and bucket
    endpoint_url: str | None = None
    region: str = "us-east-1"
    bucket: str | None = None
    prefix: str = ""  # normalised: no leading "/", ends with "/" unless empty
    addressing_style: str = "auto"  # auto | path | virtual
    create_bucket: bool = False
    # Credentials: explicit keys, else the standard AWS chain (env, files, profile, ...)
    profile: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    # New objects: storage class (optionally per content directory), server-side encryption
    storage_class: str | None = None  # None: the server's default (STANDARD on AWS)
    storage_class_by_dir: dict[str, str] = field(default_factory=dict)  # "dump/" -> class
    sse: str = "none"  # none | AES256 | aws:kms | SSE-C
    kms_key_id: str | None = None  # SSE-KMS key; None: the AWS managed key aws/s3
    sse_customer_key_file: Path | None = None
    sse_customer_key: bytes | None = field(default=None, repr=False)  # read from the file
    # Transport
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    retry_mode: str = "standard"  # standard | adaptive
    max_connections: int = 16
    # Local cache
    cache_dir: Path = Path("/var/cache/s3pvefs")
    cache_size: int = 10 * GiB
    block_size: int = 1 * MiB
    readahead_max: int = 64 * MiB  # how far ahead a sequential reader is fetched at most
    # Files up to this size whose names look like notes, logs or configs are fetched as soon
    # as their directory is listed (Proxmox reads every backup's notes right after listing).
    prefetch_small: int = 64 * KiB
    # Uploads
    part_size: int = 16 * MiB  # minimum part size; grows with the file
    multipart_threshold: int = 16 * MiB
    upload_concurrency: int = 4
    # What fsync waits for: "journal" (the local cache and journal, on disk) or "s3".
    durability: str = "journal"
    # Mount
    allow_other: bool = False
    uid: int = 0
    gid: int = 0
    file_mode: int = 0o644
    dir_mode: int = 0o755
    capacity: int = 1 * PiB  # what statfs reports as the total size
    dir_ttl: float = 10.0  # seconds a directory listing is trusted
    attr_ttl: float = 1.0  # seconds the kernel may cache attributes and entries
    negative_ttl: float = 1.0  # seconds the kernel may remember that a name does not exist
    # Logging
    log_level: str = "INFO"
    log_file: Path | None = None

    def redacted(self) -> dict[str, Any]:
        """All settings as a plain dict for logging, with the credentials masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value is not None:
                value = "***"
            elif f.name == "access_key_id" and value is not None:
                value = value[:4] + "***" if len(value) > 8 else "***"
            elif f.name in ("file_mode", "dir_mode"):
                value = f"0{value:o}"
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    def secrets(self) -> list[str]:
        """The secret strings of this configuration (for log masking)."""
        sse_c_key = sse_c_key_text(self.sse_customer_key)  # the form headers carry
        return [v for v in (self.secret_access_key, self.session_token, sse_c_key) if v]

    def validate(self) -> None:
        """Check (and normalise) a Config built in code; raises ConfigError."""
        validate_config(self)


SECRET_FIELDS = ("secret_access_key", "session_token", "sse_customer_key")

# --------------------------------------------------------------------------------------------
# Value conversion. Each converter takes (value, label) and raises ConfigError naming label.

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


# --------------------------------------------------------------------------------------------
# TOML layout: section -> key -> (Config field, converter). Flags use the field names.

_Converter = Callable[[Any, str], Any]

TOML_LAYOUT: dict[str, dict[str, tuple[str, _Converter]]] = {
    "s3": {
        "endpoint_url": ("endpoint_url", parse_str),
        "region": ("region", parse_str),
        "bucket": ("bucket", parse_str),
        "prefix": ("prefix", parse_str),
        "addressing_style": ("addressing_style", parse_str),
        "create_bucket": ("create_bucket", parse_bool),
        "profile": ("profile", parse_str),
        "verify_tls": ("verify_tls", parse_bool),
        "ca_bundle": ("ca_bundle", parse_str),
        "connect_timeout": ("connect_timeout", parse_float),
        "read_timeout": ("read_timeout", parse_float),
        "max_attempts": ("max_attempts", parse_int),
        "retry_mode": ("retry_mode", parse_str),
        "max_connections": ("max_connections", parse_int),
        "storage_class": ("storage_class", parse_storage_class),
        "storage_class_by_dir": ("storage_class_by_dir", parse_storage_class_map),
    },
    "encryption": {
        "sse": ("sse", parse_sse),
        "kms_key_id": ("kms_key_id", parse_str),
        "sse_customer_key_file": ("sse_customer_key_file", parse_path),
    },
    "credentials": {
        "access_key_id": ("access_key_id", parse_secret),
        "secret_access_key": ("secret_access_key", parse_secret),
        "session_token": ("session_token", parse_secret),
    },
    "cache": {
        "dir": ("cache_dir", parse_path),
        "size": ("cache_size", parse_size),
        "block_size": ("block_size", parse_size),
        "readahead_max": ("readahead_max", parse_size),
        "prefetch_small": ("prefetch_small", parse_size),
    },
    "upload": {
        "part_size": ("part_size", parse_size),
        "multipart_threshold": ("multipart_threshold", parse_size),
        "concurrency": ("upload_concurrency", parse_int),
        "durability": ("durability", parse_str),
    },
    "mount": {
        "allow_other": ("allow_other", parse_bool),
        "uid": ("uid", parse_int),
        "gid": ("gid", parse_int),
        "file_mode": ("file_mode", parse_mode),
        "dir_mode": ("dir_mode", parse_mode),
        "capacity": ("capacity", parse_size),
        "dir_ttl": ("dir_ttl", parse_float),
        "attr_ttl": ("attr_ttl", parse_float),
        "negative_ttl": ("negative_ttl", parse_float),
    },
    "log": {
        "level": ("log_level", parse_str),
        "file": ("log_file", parse_path),
    },
}

# Config field -> (converter, how a flag for it is spelled).
FIELD_CONVERTERS: dict[str, _Converter] = {
    fname: conv for section in TOML_LAYOUT.values() for fname, conv in section.values()
}
_FLAG_NAMES = {"verify_tls": "--no-verify-tls"}


def flag_name(field_name: str) -> str:
    """The command-line flag that sets a Config field (used in error messages)."""
    return _FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def toml_key(field_name: str) -> str:
    """"[section] key" of a Config field in the TOML file."""
    for section, keys in TOML_LAYOUT.items():
        for key, (fname, _conv) in keys.items():
            if fname == field_name:
                return f"[{section}] {key}"
    return field_name


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_toml(path: Path) -> tuple[dict[str, Any], os.stat_result]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"config file {path} is a directory")
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8") from None
    try:
        return tomllib.loads(text), st
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _values_from_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Converted values and their labels from the TOML file; enforces the chmod 600 rule."""
    data, st = _read_toml(path)
    creds = data.get("credentials")
    if (
        isinstance(creds, dict)
        and ("secret_access_key" in creds or "session_token" in creds)
        and st.st_mode & 0o066
    ):
        raise ConfigError(
            f"config file {path} contains a secret key but is readable or writable by group or "
            f"others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    sections = list(TOML_LAYOUT)
    for section, table in data.items():
        known = ", ".join("[" + s + "]" for s in sections)
        if section not in TOML_LAYOUT:
            if isinstance(table, dict):
                raise ConfigError(
                    f"unknown section [{section}] in {path}{_suggest(section, sections)}; "
                    f"known sections: {known}"
                )
            raise ConfigError(
                f"unknown key {section!r} at the top of {path}: every setting belongs in a "
                f"section ({known})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{section!r} in {path} must be a section [{section}], not a value")
        layout = TOML_LAYOUT[section]
        for key, value in table.items():
            if key not in layout:
                raise ConfigError(
                    f"unknown key {key!r} in [{section}] of {path}{_suggest(key, list(layout))}; "
                    f"known keys: {', '.join(layout)}"
                )
            fname, conv = layout[key]
            label = f"[{section}] {key} in {path}"
            values[fname] = conv(value, label)
            labels[fname] = label
    return values, labels


def load_config(config_file: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Build a validated Config from an optional TOML file and flag values (flags win).

    `overrides` maps Config field names to values; None means "not given". Values may be the
    final type or strings as typed on the command line ("16MiB", "0644", "30").
    """
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if config_file is not None:
        values, labels = _values_from_toml(Path(config_file))
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in valid_fields:
            raise ConfigError(f"unknown setting {name!r}")
        label = flag_name(name)
        conv = FIELD_CONVERTERS.get(name)
        values[name] = conv(value, label) if conv else value
        labels[name] = label
    config = Config(**values)
    validate_config(config, labels)
    return config


# --------------------------------------------------------------------------------------------
# Validation

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
MAX_SINGLE_PUT = 5 * GiB
MAX_PART_SIZE = 5 * GiB


def _check_bucket(name: str, label: str) -> None:
    problem = None
    if not 3 <= len(name) <= 63:
        problem = "must be 3 to 63 characters long"
    elif not _BUCKET_RE.match(name):
        problem = (
            "may contain only lowercase letters, digits, dots and hyphens, and must begin and "
            "end with a letter or digit"
        )
    elif ".." in name or ".-" in name or "-." in name:
        problem = "must not contain '..', '.-' or '-.'"
    elif re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        problem = "must not look like an IP address"
    elif name.startswith("xn--") or name.endswith("-s3alias") or name.endswith("--ol-s3"):
        problem = "uses a reserved prefix or suffix (xn--, -s3alias, --ol-s3)"
    if problem:
        raise ConfigError(f"{label}: invalid bucket name {name!r}: it {problem}")


def _check_endpoint(url: str, label: str) -> str:
    hint = "expected http://host[:port] or https://host[:port]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{label}: invalid endpoint URL {url!r} ({exc}); {hint}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{label}: invalid endpoint URL {url!r}: the scheme must be http or https; {hint}")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{label}: invalid endpoint URL {url!r}: no host; {hint}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{label}: invalid endpoint URL: it must not contain credentials (user:password@); "
            f"put them in [credentials] or the environment"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"{label}: invalid endpoint URL {url!r}: it must not have a path, query or fragment "
            f"(the bucket is set separately); {hint}"
        )
    if port is not None and port == 0:
        raise ConfigError(f"{label}: invalid endpoint URL {url!r}: port 0; {hint}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL_RE.match(x) for x in labels):
            raise ConfigError(f"{label}: invalid endpoint URL {url!r}: bad host name {host!r}") from None
    netloc = parts.netloc
    return f"{parts.scheme.lower()}://{netloc}"


def _normalise_prefix(prefix: str, label: str) -> str:
    if "\0" in prefix or any(ord(c) < 0x20 for c in prefix):
        raise ConfigError(f"{label}: the prefix contains control characters")
    stripped = prefix.lstrip("/")
    if not stripped:
        return ""
    if "//" in stripped:
        raise ConfigError(f"{label}: the prefix {prefix!r} contains '//' (an empty path component)")
    if not stripped.endswith("/"):
        stripped += "/"
    if any(part in (".", "..") for part in stripped[:-1].split("/")):
        raise ConfigError(f"{label}: the prefix {prefix!r} must not contain '.' or '..' components")
    if len(stripped.encode("utf-8")) > 512:
        raise ConfigError(f"{label}: the prefix is longer than 512 bytes")
    return stripped


def human_size(count: float) -> str:
    """A byte count for people: "512 B", "16.0 MiB", "1.5 GiB"."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _fmt_size(n: int) -> str:
    for unit, factor in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n} bytes"


def validate_config(config: Config, labels: dict[str, str] | None = None) -> None:
    """Check every value, normalising in place (prefix, endpoint, log level); raise ConfigError."""
    given = labels or {}

    def lab(name: str) -> str:
        return given.get(name) or toml_key(name)

    c = config
    if not isinstance(c.cache_dir, Path):
        c.cache_dir = parse_path(c.cache_dir, lab("cache_dir"))
    if c.log_file is not None and not isinstance(c.log_file, Path):
        c.log_file = parse_path(c.log_file, lab("log_file"))
    # S3
    if c.endpoint_url is not None:
        c.endpoint_url = _check_endpoint(c.endpoint_url, lab("endpoint_url"))
        if c.bucket is None:
            raise ConfigError(
                f"an endpoint is set ({lab('endpoint_url')}) but no bucket: "
                f"give --bucket NAME or [s3] bucket"
            )
    if c.bucket is not None:
        _check_bucket(c.bucket, lab("bucket"))
    if not c.region or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", c.region):
        raise ConfigError(f"{lab('region')}: invalid region {c.region!r}")
    c.prefix = _normalise_prefix(c.prefix or "", lab("prefix"))
    c.addressing_style = c.addressing_style.lower()
    if c.addressing_style not in ("auto", "path", "virtual"):
        raise ConfigError(
            f"{lab('addressing_style')}: must be auto, path or virtual, not {config.addressing_style!r}"
        )
    c.durability = c.durability.lower()
    if c.durability not in ("journal", "s3"):
        raise ConfigError(f"{lab('durability')}: must be journal or s3, not {c.durability!r}")
    c.retry_mode = c.retry_mode.lower()
    if c.retry_mode not in ("standard", "adaptive"):
        raise ConfigError(f"{lab('retry_mode')}: must be standard or adaptive, not {c.retry_mode!r}")
    # Credentials
    if c.profile is not None and not c.profile.strip():
        raise ConfigError(f"{lab('profile')}: the profile name is empty")
    for name in ("access_key_id", "secret_access_key", "session_token"):
        if getattr(c, name) is not None and not getattr(c, name):
            raise ConfigError(f"{lab(name)}: empty value; remove the line to use the AWS chain")
    if (c.access_key_id is None) != (c.secret_access_key is None):
        raise ConfigError(
            "[credentials] needs both access_key_id and secret_access_key (or neither, to use "
            "the standard AWS chain: environment, ~/.aws files, profile)"
        )
    if c.session_token is not None and c.access_key_id is None:
        raise ConfigError("[credentials] session_token needs access_key_id and secret_access_key")
    if c.profile is not None and c.access_key_id is not None:
        raise ConfigError(
            f"both a profile ({lab('profile')}) and explicit keys in [credentials] are set; "
            f"use one of them"
        )
    # Transport
    if c.ca_bundle is not None:
        ca = Path(c.ca_bundle).expanduser()
        if not ca.is_file():
            raise ConfigError(f"{lab('ca_bundle')}: CA bundle {c.ca_bundle} is not a file")
        c.ca_bundle = str(ca.absolute())
    for name in ("connect_timeout", "read_timeout"):
        if not getattr(c, name) > 0:
            raise ConfigError(f"{lab(name)}: must be more than 0 seconds, not {getattr(c, name)}")
    if c.max_attempts < 1:
        raise ConfigError(f"{lab('max_attempts')}: must be at least 1, not {c.max_attempts}")
    if c.max_connections < 1:
        raise ConfigError(f"{lab('max_connections')}: must be at least 1, not {c.max_connections}")
    validate_object_options(c, lab)
    # Cache and uploads
    for name in ("cache_size", "block_size", "part_size", "multipart_threshold", "capacity"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{lab(name)}: must be a positive size, not {getattr(c, name)}")
    bs = c.block_size
    if bs & (bs - 1) or not 64 * KiB <= bs <= 64 * MiB:
        raise ConfigError(
            f"{lab('block_size')}: must be a power of two from 64 KiB to 64 MiB "
            f"(e.g. 1MiB), not {_fmt_size(bs)}"
        )
    if c.part_size < 5 * MiB:
        raise ConfigError(
            f"{lab('part_size')}: must be at least 5 MiB (the S3 minimum part size), "
            f"not {_fmt_size(c.part_size)}"
        )
    if c.part_size > MAX_PART_SIZE:
        raise ConfigError(f"{lab('part_size')}: must be at most 5 GiB (the S3 maximum part size)")
    if c.part_size % bs:
        raise ConfigError(
            f"{lab('part_size')}: must be a multiple of the block size ({_fmt_size(bs)}), "
            f"not {_fmt_size(c.part_size)}"
        )
    if c.multipart_threshold > MAX_SINGLE_PUT:
        raise ConfigError(
            f"{lab('multipart_threshold')}: must be at most 5 GiB (the largest single PUT)"
        )
    # A writer needs room for the part it fills while the previous one uploads.
    if c.cache_size < 2 * c.part_size:
        raise ConfigError(
            f"{lab('cache_size')}: {_fmt_size(c.cache_size)} is too small: the cache must hold "
            f"at least 2 upload parts (2 x part size {_fmt_size(c.part_size)} = "
            f"{_fmt_size(2 * c.part_size)}); raise the cache size or lower the part size"
        )
    if c.upload_concurrency < 1:
        raise ConfigError(
            f"{lab('upload_concurrency')}: must be at least 1, not {c.upload_concurrency}"
        )
    if c.readahead_max < bs:
        raise ConfigError(f"{lab('readahead_max')}: must be at least one block ({_fmt_size(bs)})")
    if not 0 <= c.prefetch_small <= 16 * MiB:
        raise ConfigError(
            f"{lab('prefetch_small')}: must be from 0 (off) to 16 MiB, not {c.prefetch_small}"
        )
    # Mount
    for name in ("uid", "gid"):
        if not 0 <= getattr(c, name) < 2**32 - 1:
            raise ConfigError(f"{lab(name)}: must be from 0 to 4294967294, not {getattr(c, name)}")
    for name in ("file_mode", "dir_mode"):
        if not 0 <= getattr(c, name) <= 0o7777:
            raise ConfigError(f"{lab(name)}: mode out of range (0000 to 7777 octal)")
    for name in ("dir_ttl", "attr_ttl", "negative_ttl"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{lab(name)}: must be 0 or more seconds, not {getattr(c, name)}")
    # Logging
    level = c.log_level.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in _LOG_LEVELS:
        raise ConfigError(
            f"{lab('log_level')}: unknown log level {c.log_level!r}; use one of "
            f"{', '.join(x.lower() for x in _LOG_LEVELS)}"
        )
    c.log_level = level
