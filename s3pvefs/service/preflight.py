"""Checks of the local environment before mounting; each failure is a ConfigError to show as is."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from s3pvefs.errors import ConfigError

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape_mountinfo(field: str) -> str:
    """Undo the kernel's octal escapes (\\040 for a space, ...) in a mountinfo path."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = MOUNTINFO) -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mountinfo (empty if unreadable)."""
    result: dict[str, str] = {}
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError:
        return result
    for line in lines:
        # id parent major:minor root mount-point options [optional...] - fstype source super
        fields = line.split()
        if len(fields) < 5:
            continue
        fstype = ""
        if "-" in fields[6:]:
            sep = fields.index("-", 6)
            if sep + 1 < len(fields):
                fstype = fields[sep + 1]
        result[_unescape_mountinfo(fields[4])] = fstype
    return result


def is_mounted(path: Path, mountinfo: Path = MOUNTINFO) -> bool:
    """True when `path` (absolute, resolved) is a mount point."""
    return str(path) in mount_points(mountinfo)


def check_mountpoint(path: Path | str, mountinfo: Path = MOUNTINFO) -> Path:
    """The mount point must exist, be an empty directory and not be mounted already.

    Returns the absolute, symlink-resolved path to give to the kernel.
    """
    given = Path(path)
    try:
        st = os.stat(given)
    except FileNotFoundError:
        raise ConfigError(f"mountpoint {given} does not exist; create it with: mkdir -p {given}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise ConfigError(
                f"mountpoint {given} is a stale FUSE mount (its process is gone); "
                f"unmount it with: fusermount3 -u {given}"
            ) from None
        raise ConfigError(f"mountpoint {given} cannot be used: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"mountpoint {given} is not a directory")
    resolved = given.resolve()
    mounts = mount_points(mountinfo)
    if str(resolved) in mounts:
        fstype = mounts[str(resolved)]
        what = f" ({fstype})" if fstype else ""
        raise ConfigError(
            f"mountpoint {resolved} is already a mount point{what}; unmount it first "
            f"(fusermount3 -u {resolved} or umount {resolved})"
        )
    try:
        with os.scandir(resolved) as entries:
            first = next(entries, None)
    except OSError as exc:
        raise ConfigError(f"mountpoint {resolved} cannot be read: {exc.strerror or exc}") from None
    if first is not None:
        raise ConfigError(
            f"mountpoint {resolved} is not empty (it contains {first.name!r}); s3pvefs mounts "
            f"only on an empty directory so that nothing is hidden under the mount"
        )
    return resolved


def check_fuse(allow_other: bool = False) -> None:
    """FUSE must be usable: /dev/fuse present and accessible, fusermount3 installed."""
    dev = Path("/dev/fuse")
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        raise ConfigError(
            "FUSE is not available: /dev/fuse does not exist (load the module with "
            "'modprobe fuse'; in a container, enable FUSE for it, e.g. LXC features: fuse=1)"
        ) from None
    if not stat.S_ISCHR(st.st_mode):
        raise ConfigError("FUSE is not available: /dev/fuse is not a character device")
    if not os.access(dev, os.R_OK | os.W_OK):
        raise ConfigError(
            "FUSE is not available: no permission to open /dev/fuse (run as root)"
        )
    if shutil.which("fusermount3") is None:
        raise ConfigError(
            "FUSE is not available: fusermount3 is not on PATH (install it: apt-get install fuse3)"
        )
    if allow_other and os.geteuid() != 0:
        try:
            conf = Path("/etc/fuse.conf").read_text(encoding="utf-8", errors="replace")
        except OSError:
            conf = ""
        if not any(line.strip() == "user_allow_other" for line in conf.splitlines()):
            raise ConfigError(
                "allow_other needs root or 'user_allow_other' in /etc/fuse.conf"
            )


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory)
        return True
    except ValueError:
        return False


def check_local_paths(mountpoint: Path, cache_dir: Path, log_file: Path | None) -> None:
    """The cache directory and the log file must not be inside the mount (that would deadlock)."""
    if _inside(cache_dir, mountpoint):
        raise ConfigError(
            f"the cache directory {cache_dir} is inside the mountpoint {mountpoint}; "
            f"put it on a local disk (e.g. /var/cache/s3pvefs)"
        )
    if log_file is not None and _inside(log_file, mountpoint):
        raise ConfigError(f"the log file {log_file} is inside the mountpoint {mountpoint}")
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"the cache directory {cache_dir} exists but is not a directory")
