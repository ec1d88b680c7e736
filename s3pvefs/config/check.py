"""Validation of a ``Config``: every value checked and normalised in place (prefix, endpoint,
log level, ...); every problem is a ``ConfigError`` whose message names the setting the way the
admin wrote it (the label ``configfile.load_config`` passes, else its TOML key).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from s3pvefs.config.retention import parse_retention_map, parse_retention_mode
from s3pvefs.config.s3options import validate_object_options
from s3pvefs.config.settings import Config, toml_key
from s3pvefs.config.values import GiB, KiB, MiB, format_size, parse_path
from s3pvefs.errors import ConfigError

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
    if c.max_request_rate < 0:
        raise ConfigError(f"{lab('max_request_rate')}: cannot be negative (0: no cap)")
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
    c.retention_by_dir = parse_retention_map(c.retention_by_dir or {}, lab("retention_by_dir"))
    c.retention_mode = parse_retention_mode(c.retention_mode, lab("retention_mode"))
    # Cache and uploads
    for name in ("cache_size", "block_size", "part_size", "multipart_threshold", "capacity"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{lab(name)}: must be a positive size, not {getattr(c, name)}")
    bs = c.block_size
    if bs & (bs - 1) or not 64 * KiB <= bs <= 64 * MiB:
        raise ConfigError(
            f"{lab('block_size')}: must be a power of two from 64 KiB to 64 MiB "
            f"(e.g. 1MiB), not {format_size(bs)}"
        )
    if c.part_size < 5 * MiB:
        raise ConfigError(
            f"{lab('part_size')}: must be at least 5 MiB (the S3 minimum part size), "
            f"not {format_size(c.part_size)}"
        )
    if c.part_size > MAX_PART_SIZE:
        raise ConfigError(f"{lab('part_size')}: must be at most 5 GiB (the S3 maximum part size)")
    if c.part_size % bs:
        raise ConfigError(
            f"{lab('part_size')}: must be a multiple of the block size ({format_size(bs)}), "
            f"not {format_size(c.part_size)}"
        )
    if c.multipart_threshold > MAX_SINGLE_PUT:
        raise ConfigError(
            f"{lab('multipart_threshold')}: must be at most 5 GiB (the largest single PUT)"
        )
    # A writer needs room for the part it fills while the previous one uploads.
    if c.cache_size < 2 * c.part_size:
        raise ConfigError(
            f"{lab('cache_size')}: {format_size(c.cache_size)} is too small: the cache must hold "
            f"at least 2 upload parts (2 x part size {format_size(c.part_size)} = "
            f"{format_size(2 * c.part_size)}); raise the cache size or lower the part size"
        )
    if c.upload_concurrency < 1:
        raise ConfigError(
            f"{lab('upload_concurrency')}: must be at least 1, not {c.upload_concurrency}"
        )
    if c.readahead_max < bs:
        raise ConfigError(f"{lab('readahead_max')}: must be at least one block ({format_size(bs)})")
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
