"""Mount configuration: the ``Config`` dataclass, and where each setting is written: its
section and key in the TOML file (``TOML_LAYOUT``, with the converter of its value) and its
command-line flag.

``configfile.load_config(file, overrides)`` builds a Config from a TOML file and flag values;
``configcheck.validate_config`` checks and normalises one; the converters are in
``configvalues.py``.

Credentials from the environment (AWS_ACCESS_KEY_ID, ...) are deliberately not copied into the
Config: when it has no explicit keys the store uses the standard AWS credential chain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from s3pvefs.config.bwlimit import UNLIMITED, Timetable, parse_bwlimit
from s3pvefs.config.retention import (
    GOVERNANCE,
    parse_retention_map,
    parse_retention_mode,
)
from s3pvefs.config.s3options import (
    parse_sse,
    parse_storage_class,
    parse_storage_class_map,
    sse_c_key_text,
)
from s3pvefs.config.values import (
    GiB,
    KiB,
    MiB,
    PiB,
    parse_bool,
    parse_float,
    parse_int,
    parse_listen,
    parse_mode,
    parse_path,
    parse_secret,
    parse_size,
    parse_str,
)


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
    # S3 Object Lock of new objects: seconds per content directory ("dump/" -> 30 days)
    retention_by_dir: dict[str, int] = field(default_factory=dict)
    retention_mode: str = GOVERNANCE  # GOVERNANCE | COMPLIANCE
    # Transport
    verify_tls: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    retry_mode: str = "standard"  # standard | adaptive
    max_connections: int = 16
    max_request_rate: float = 0.0  # requests per second at most; 0: no cap
    # Bandwidth limits (a rate or a timetable of the day: bwlimit.py); off by default
    upload_bwlimit: Timetable = UNLIMITED
    download_bwlimit: Timetable = UNLIMITED
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
    # Logging and metrics
    log_level: str = "INFO"
    log_file: Path | None = None
    metrics_listen: tuple[str, int] | None = None  # where /metrics is served; None: nowhere

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
            elif isinstance(value, Timetable):
                value = value.describe()
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    def secrets(self) -> list[str]:
        """The secret strings of this configuration (for log masking)."""
        sse_c_key = sse_c_key_text(self.sse_customer_key)  # the form headers carry
        return [v for v in (self.secret_access_key, self.session_token, sse_c_key) if v]


SECRET_FIELDS = ("secret_access_key", "session_token", "sse_customer_key")

# --------------------------------------------------------------------------------------------
# TOML layout: section -> key -> (Config field, converter). Flags use the field names.

_Converter = Callable[[Any, str], Any]
ANY_KEY = "*"  # a section's other keys, gathered into one table for this field

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
        "max_request_rate": ("max_request_rate", parse_float),
        "storage_class": ("storage_class", parse_storage_class),
        "storage_class_by_dir": ("storage_class_by_dir", parse_storage_class_map),
    },
    "encryption": {
        "sse": ("sse", parse_sse),
        "kms_key_id": ("kms_key_id", parse_str),
        "sse_customer_key_file": ("sse_customer_key_file", parse_path),
    },
    # mode, and one key per content directory: dump = "30d", "template/iso" = "7d"
    "retention": {
        "mode": ("retention_mode", parse_retention_mode),
        ANY_KEY: ("retention_by_dir", parse_retention_map),
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
        "bwlimit": ("upload_bwlimit", parse_bwlimit),
    },
    "download": {
        "bwlimit": ("download_bwlimit", parse_bwlimit),
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
    "metrics": {
        "listen": ("metrics_listen", parse_listen),
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
                return f"[{section}]" if key == ANY_KEY else f"[{section}] {key}"
    return field_name
