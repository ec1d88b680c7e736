"""Storage class and server-side encryption settings: spellings, validation, the SSE-C key file.

Kept apart from config.py so that the vocabulary of S3 options lives in one place; configcheck.py
calls `validate_object_options` and s3params.py calls `storage_class_for`.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import stat
from pathlib import Path
from typing import Any, Callable

from s3pvefs.errors import ConfigError

STORAGE_CLASSES = (
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
    "DEEP_ARCHIVE", "REDUCED_REDUNDANCY",
)
# Objects in these classes cannot be read (nor copied) before a restore.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

SSE_NONE, SSE_S3, SSE_KMS, SSE_C = "none", "AES256", "aws:kms", "SSE-C"
SSE_VALUES = (SSE_NONE, SSE_S3, SSE_KMS, SSE_C)
_SSE_SPELLINGS = {
    "none": SSE_NONE, "off": SSE_NONE, "": SSE_NONE,
    "aes256": SSE_S3, "sse-s3": SSE_S3,
    "aws:kms": SSE_KMS, "sse-kms": SSE_KMS, "kms": SSE_KMS,
    "sse-c": SSE_C, "ssec": SSE_C,
}
SSE_C_KEY_BYTES = 32  # AES-256
_KEY_FILE_MAX = 4096  # a key file is 32 or ~45 bytes; anything big is the wrong file


def _did_you_mean(word: str, candidates: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_storage_class(value: Any, label: str) -> str:
    """One of STORAGE_CLASSES, any case; anything else is refused with the closest spelling."""
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a storage class name such as \"STANDARD_IA\"")
    name = value.strip().upper()
    if name in STORAGE_CLASSES:
        return name
    hint = _did_you_mean(name.replace("-", "_").replace(" ", "_"), STORAGE_CLASSES)
    raise ConfigError(
        f"{label}: unknown storage class {value!r}{hint}; use one of {', '.join(STORAGE_CLASSES)}"
    )


def normalise_content_dir(text: str, label: str) -> str:
    """"dump", "/dump/" -> "dump/": a directory relative to the prefix, ending with "/"."""
    stripped = text.strip().strip("/")
    parts = stripped.split("/")
    if not stripped or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"{label}: invalid directory {text!r}: use a path relative to the prefix such as "
            f"\"dump\" or \"template/iso\" (the default class is set by storage_class)"
        )
    return stripped + "/"


def parse_storage_class_map(value: Any, label: str) -> dict[str, str]:
    """Directory -> storage class, from a TOML table or a flag value such as
    "dump=STANDARD_IA,template=STANDARD"."""
    if isinstance(value, str):
        value = _pairs_from_flag(value, label)
    if not isinstance(value, dict):
        raise ConfigError(
            f"{label}: expected a table of directory = \"CLASS\" (e.g. dump = \"STANDARD_IA\")"
        )
    result: dict[str, str] = {}
    for directory, storage_class in value.items():
        where = f"{label} entry {directory!r}"
        result[normalise_content_dir(str(directory), where)] = parse_storage_class(
            storage_class, where
        )
    return result


def _pairs_from_flag(text: str, label: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        directory, equals, storage_class = item.partition("=")
        if not equals:
            raise ConfigError(
                f"{label}: expected DIR=CLASS[,DIR=CLASS...] such as dump=STANDARD_IA, "
                f"got {item!r}"
            )
        pairs[directory.strip()] = storage_class.strip()
    return pairs


def parse_sse(value: Any, label: str) -> str:
    """none, AES256 (SSE-S3), aws:kms (SSE-KMS) or SSE-C; a few common spellings are accepted."""
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected one of {', '.join(SSE_VALUES)}")
    text = value.strip().lower()
    if text in _SSE_SPELLINGS:
        return _SSE_SPELLINGS[text]
    hint = _did_you_mean(text, list(_SSE_SPELLINGS))
    raise ConfigError(f"{label}: unknown encryption {value!r}{hint}; use one of "
                      f"{', '.join(SSE_VALUES)}")


def read_sse_customer_key(path: Path, label: str) -> bytes:
    """The SSE-C key: a regular file, mode 0600 or stricter, holding 32 raw bytes or their
    base64 (44 characters, a trailing newline is fine). Its content is never quoted."""
    how = ("create one with: openssl rand -base64 32 > FILE && chmod 600 FILE")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{label}: SSE-C key file {path} does not exist; {how}") from None
    except OSError as exc:
        raise ConfigError(f"{label}: SSE-C key file {path} cannot be read: "
                          f"{exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{label}: SSE-C key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{label}: SSE-C key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        content = os.read(fd, _KEY_FILE_MAX + 1)  # a regular file: one read gets it all
    finally:
        os.close(fd)
    return _key_from_file_content(content, path, label, how)


def _key_from_file_content(content: bytes, path: Path, label: str, how: str) -> bytes:
    if len(content) == SSE_C_KEY_BYTES:
        return content  # raw key (openssl rand 32 > FILE)
    try:
        decoded = base64.b64decode(content.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != SSE_C_KEY_BYTES:
        raise ConfigError(
            f"{label}: SSE-C key file {path} must hold a 256-bit key: exactly 32 raw bytes or "
            f"their base64 encoding (44 characters); {how}"
        )
    return decoded


def validate_object_options(config: Any, lab: Callable[[str], str]) -> None:
    """Normalise and cross-check the storage class and encryption settings of a Config;
    reads the SSE-C key file into config.sse_customer_key."""
    c = config
    if c.storage_class is not None:
        c.storage_class = parse_storage_class(c.storage_class, lab("storage_class"))
    c.storage_class_by_dir = parse_storage_class_map(
        c.storage_class_by_dir or {}, lab("storage_class_by_dir")
    )
    c.sse = parse_sse(c.sse, lab("sse"))
    if c.kms_key_id is not None:
        if not c.kms_key_id.strip():
            raise ConfigError(
                f"{lab('kms_key_id')}: empty value; remove it to use the AWS managed key aws/s3"
            )
        if c.sse != SSE_KMS:
            raise ConfigError(f"{lab('kms_key_id')}: a KMS key is only used with "
                              f"sse = \"aws:kms\" ({lab('sse')} is {c.sse!r})")
    if c.sse_customer_key_file is not None:
        if c.sse != SSE_C:
            raise ConfigError(
                f"{lab('sse_customer_key_file')}: a customer key is only used with "
                f"sse = \"SSE-C\" ({lab('sse')} is {c.sse!r})"
            )
        c.sse_customer_key = read_sse_customer_key(
            Path(c.sse_customer_key_file), lab("sse_customer_key_file")
        )
    if c.sse == SSE_C and c.sse_customer_key is None:
        raise ConfigError(
            f"{lab('sse')} is SSE-C but no customer key is set: give --sse-customer-key-file "
            f"FILE or [encryption] sse_customer_key_file (a chmod 600 file with 32 random bytes)"
        )
    if c.sse_customer_key is not None and len(c.sse_customer_key) != SSE_C_KEY_BYTES:
        raise ConfigError("the SSE-C customer key must be 32 bytes")


def storage_class_for(relative_key: str, default: str | None, by_dir: dict[str, str]) -> str | None:
    """The class a new object gets: the longest configured directory that holds the key wins,
    else the default (None: let the server choose, STANDARD on AWS)."""
    best = ""
    for directory in by_dir:
        if relative_key.startswith(directory) and len(directory) > len(best):
            best = directory
    return by_dir[best] if best else default


def sse_c_key_text(key: bytes | None) -> str | None:
    """The key the way it travels in headers (base64): what log masking must hide."""
    return base64.b64encode(key).decode("ascii") if key else None
