"""Path <-> key mapping, name validation and attribute metadata encoding.

A file at path ``a/b/c`` is the object ``<prefix>a/b/c``; a directory is the key prefix
``<prefix>a/b/`` and, when it was made by mkdir, the empty marker object with that key.
"""

from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from cachetools import LRUCache

from s3pvefs.errors import FsError, FsKind

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes, what the kernel and every tool expect
KEY_MAX = 1024  # bytes, S3's limit on a key

# The Proxmox content directories, created when the mount comes up.
PROXMOX_DIRS = (
    "dump",
    "images",
    "private",
    "snippets",
    "import",
    "template",
    "template/iso",
    "template/cache",
)

# Names s3pvefs writes next to the data (attribute indexes, kept-aside copies, `s3pvefs check`
# probes): never a file of the storage.
INTERNAL_NAME_PREFIX = ".s3pvefs-"
# Per-directory attribute index objects (attrindex.py): hidden from listings, reserved names.
INDEX_PREFIX = INTERNAL_NAME_PREFIX + "attrs."
# Objects that keep the data of files deleted while still open (core.py), at the top of the
# prefix: hidden from listings, reserved names.
KEPT_PREFIX = INTERNAL_NAME_PREFIX + "unlinked."


def is_file_key(key: str) -> bool:
    """A key of a file's object: not a directory marker, not one of s3pvefs's own objects."""
    name = key.rpartition("/")[2]
    return bool(name) and not name.startswith(INTERNAL_NAME_PREFIX)

# x-amz-meta-* names; the same ones s3fs uses, so both tools agree on attributes.
META_MODE = "mode"
META_UID = "uid"
META_GID = "gid"
META_MTIME = "mtime"

# Bounds of what a stat structure can carry; metadata beyond them is garbage.
MODE_LIMIT = 0o177777 + 1
ID_LIMIT = 2**32
MTIME_LIMIT = 2**63  # nanoseconds in a signed 64-bit integer


def name_from_kernel(raw: bytes) -> str:
    """Decode and check a name the kernel gives us for a new entry."""
    if len(raw) > NAME_MAX:
        raise FsError(FsKind.NAME_TOO_LONG, "name longer than 255 bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        # S3 keys are UTF-8: a name that is not cannot be stored.
        raise FsError(FsKind.INVALID_NAME, "name is not valid UTF-8") from None
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise FsError(FsKind.INVALID_NAME, f"invalid name {name!r}")
    for reserved in (INDEX_PREFIX, KEPT_PREFIX):
        if name.startswith(reserved):
            raise FsError(FsKind.RESERVED_NAME,
                          f"{name!r}: names starting with {reserved} are reserved")
    return name


def check_key_length(key: str) -> None:
    if len(key.encode("utf-8")) > KEY_MAX:
        raise FsError(FsKind.NAME_TOO_LONG, "path too long for an S3 key (1024 bytes)")


def listing_name(dir_key: str, key: str) -> str | None:
    """The child name of ``key`` inside directory ``dir_key``, or None if a tree can't show it.

    ``key`` is a listed object key or a common prefix (ending with "/").
    """
    rest = key[len(dir_key):]
    rest = rest.removesuffix("/")
    if rest in ("", ".", "..") or "/" in rest or "\0" in rest:
        return None
    if len(rest.encode("utf-8")) > NAME_MAX:
        return None
    return rest


class SkippedKeys:
    """Warn once per key that the tree cannot show, instead of failing the listing."""

    def __init__(self) -> None:
        # Bounded: a bucket full of odd keys must not grow memory without end.
        self._warned: LRUCache[str, bool] = LRUCache(maxsize=100_000)

    def warn(self, key: str, why: str) -> None:
        if key in self._warned:
            return
        self._warned[key] = True
        log.warning("skipping S3 key %r: %s", key, why)


@dataclass(frozen=True)
class Attributes:
    mode: int  # including the file-type bits
    uid: int
    gid: int
    mtime_ns: int


def encode_attributes(attrs: Attributes) -> dict[str, str]:
    sign = "-" if attrs.mtime_ns < 0 else ""
    seconds, nanos = divmod(abs(attrs.mtime_ns), 1_000_000_000)
    mtime = f"{sign}{seconds}.{nanos:09d}" if nanos else f"{sign}{seconds}"
    return {
        META_MODE: str(attrs.mode),
        META_UID: str(attrs.uid),
        META_GID: str(attrs.gid),
        META_MTIME: mtime,
    }


def decode_attributes(metadata: dict[str, str] | None, defaults: Attributes) -> Attributes:
    """Attributes from an object's user metadata; anything missing or garbled uses defaults."""
    metadata = metadata or {}
    mode = _parse_int(metadata.get(META_MODE), defaults.mode, MODE_LIMIT)
    if stat.S_IFMT(mode) == 0:
        mode |= stat.S_IFMT(defaults.mode)
    elif stat.S_IFMT(mode) not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        mode = defaults.mode  # devices, fifos, sockets: not something we serve
    return Attributes(
        mode=mode,
        uid=_parse_int(metadata.get(META_UID), defaults.uid, ID_LIMIT),
        gid=_parse_int(metadata.get(META_GID), defaults.gid, ID_LIMIT),
        mtime_ns=_parse_mtime(metadata.get(META_MTIME), defaults.mtime_ns),
    )


def _parse_int(text: str | None, default: int, limit: int) -> int:
    """A non-negative integer below ``limit`` (what the kernel can take), else the default."""
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return value if 0 <= value < limit else default


def _parse_mtime(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        seconds = Decimal(text)
        if not seconds.is_finite():
            return default
        value = int(seconds * 1_000_000_000)
    except (InvalidOperation, ValueError, OverflowError):
        return default
    return value if -MTIME_LIMIT <= value < MTIME_LIMIT else default


# -- where a temporary file is going to be renamed to ------------------------------------------
# Proxmox writes under temporary names and renames right after close (shared/proxmox-io.md):
# vzdump archives as `X.vma.dat` / `X.tar.dat` / `X.dat`, notes as `<name>.tmp.<pid>`, URL
# downloads as `<dest>.tmp_dwnl.<pid>`. Uploading such a file straight to its final key saves
# uploading or copying it a second time at the rename.

_TEMP_SUFFIX = re.compile(r"^(?P<final>.+)\.(?:tmp|tmp_dwnl)\.\d+$")
_VZDUMP_DAT = re.compile(r"^(?P<stem>vzdump-(?:qemu|lxc)-.+?)(?P<kind>\.vma|\.tar)?\.dat$")

_BACKUP_ARCHIVE = re.compile(r"^vzdump-(?:qemu|lxc|openvz)-.+\.(?:vma|tar|tgz)(?:\.(?:zst|gz|lzo))?$")

_COMPRESSION_MAGIC = (
    (b"\x28\xb5\x2f\xfd", ".zst"),
    (b"\x1f\x8b", ".gz"),
    (b"\x89LZO\x00\r\n\x1a\n", ".lzo"),
)
MAGIC_BYTES = 512  # how much of the start of a file predict_final_name looks at


def is_backup_archive(name: str) -> bool:
    """A vzdump archive: what "show configuration" reads the head of."""
    return bool(_BACKUP_ARCHIVE.match(name))


def is_temporary_name(name: str) -> bool:
    return bool(_TEMP_SUFFIX.match(name) or _VZDUMP_DAT.match(name))


def predict_final_name(name: str, head: bytes) -> str | None:
    """The name a temporary file will be renamed to, judged from its name and first bytes."""
    match = _TEMP_SUFFIX.match(name)
    if match:
        return match["final"]
    match = _VZDUMP_DAT.match(name)
    if not match:
        return None
    if match["kind"]:  # X.vma.dat / X.tar.dat: a compressed archive
        extension = next((ext for magic, ext in _COMPRESSION_MAGIC if head.startswith(magic)), None)
        return f"{match['stem']}{match['kind']}{extension}" if extension else None
    if head.startswith(b"VMA\x00"):  # X.dat: an uncompressed archive
        return f"{match['stem']}.vma"
    if head[257:262] == b"ustar":
        return f"{match['stem']}.tar"
    return None
