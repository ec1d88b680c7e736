"""Admin channel between the command line and a running mount: a Unix socket per mountpoint.

The mount serves ``/run/s3pvefs/<hash>.sock`` (root only) for as long as its root nursery runs.
Protocol: the client connects, sends one JSON object on one line, reads one JSON object on one
line, and the connection ends.

    {"op": "status"}
        -> {"ok": true, "status": {...FsCore.status()...}}
    {"op": "metrics"}
        -> {"ok": true, "metrics": "...the Prometheus text format (metrics.py)..."}
    {"op": "sync", "path": "dump/x.vma.zst" or "", "timeout": seconds or null}
        -> {"ok": bool, "failures": {path: error}, "timed_out": bool, "pending": n}
    {"op": "refresh", "path": "dump" or ""}
        -> {"ok": true, "refreshed": n}
    {"op": "set", "setting": "bwlimit", "value": "08:00,20MiB 19:00,off"}
        -> {"ok": true, "limits": {...}}
    anything else
        -> {"ok": false, "error": "..."}

"pending" counts the files at or below the path still not on S3 when the answer is sent. A sync
runs in the server's own nursery: when the timeout passes or the client goes away, the server
stops waiting for it but the uploads it started go on (cancelling one would throw away the bytes
already sent, and the background uploader would start that file again from scratch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

from s3pvefs.errors import ConfigError, FsError, S3PveFsError, StoreError

log = logging.getLogger(__name__)

CONTROL_DIR = Path("/run/s3pvefs")
MOUNTINFO = Path("/proc/self/mountinfo")
FSTYPE = "fuse.s3pvefs"
MAX_REQUEST = 64 * 1024  # bytes in one request line
MAX_RESPONSE = 64 * 1024 * 1024  # what the client accepts
REQUEST_READ_TIMEOUT = 10.0  # a client that connects must send its request within this


class ControlError(S3PveFsError):
    """The admin channel cannot be used: not an s3pvefs mount, no answer, bad answer."""


def control_socket_path(mountpoint: Path) -> Path:
    """Where the mount at ``mountpoint`` (absolute, as the kernel shows it) listens."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(mountpoint))).hexdigest()
    return CONTROL_DIR / f"{digest[:16]}.sock"


# -- server ---------------------------------------------------------------------------------


class _File(Protocol):
    def path(self) -> str: ...


class Admin(Protocol):
    """The operations the admin channel answers with (liveadmin.LiveAdmin)."""

    def status(self) -> dict: ...

    def metrics_text(self) -> str: ...

    async def sync_path(self, path: str | None) -> dict[str, str]: ...

    async def refresh(self, path: str | None) -> int: ...

    async def versions(self, path: str) -> list[dict]: ...

    async def undelete(self, path: str, version_id: str | None) -> dict: ...

    def change_setting(self, setting: str, value: str) -> dict: ...

    def dirty_nodes(self) -> Sequence[_File]: ...


async def serve_control(core: Admin, mountpoint: Path, *, socket_path: Path | None = None,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer admin requests for ``core`` until cancelled; the socket is removed at exit.

    If the socket cannot be created, the error is logged and the mount goes on without it.
    """
    path = Path(socket_path) if socket_path is not None else control_socket_path(mountpoint)
    try:
        sock, identity = await _bind(path)
    except OSError as exc:
        log.error("admin socket %s unavailable (s3pvefs sync/status will not reach this "
                  "mount): %s", path, exc)
        task_status.started(None)
        return
    log.info("admin socket %s", path)
    try:
        async with trio.open_nursery() as nursery:
            server = _Server(core, nursery)
            await nursery.start(trio.serve_listeners, server.handle, [trio.SocketListener(sock)])
            task_status.started(path)
    finally:
        sock.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_if_ours, path, identity)


async def _bind(path: Path) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """A listening socket at ``path``, mode 0600, in a 0700 directory; replaces a stale one.

    Bound under a temporary name and renamed into place, so the final name never exists with
    looser permissions and a socket left by a crashed run is replaced atomically. The file
    system calls run in worker threads: the mount's loop is serving meanwhile.
    """
    temporary = await trio.to_thread.run_sync(_prepare_directory, path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(temporary))
        try:
            await trio.to_thread.run_sync(temporary.chmod, 0o600)
            sock.listen(16)
            created = await trio.to_thread.run_sync(_move_into_place, temporary, path)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_unlink_if_present, temporary)
            raise
    except BaseException:
        sock.close()
        raise
    return sock, (created.st_dev, created.st_ino)


def _prepare_directory(path: Path) -> Path:
    """Make the socket's 0700 directory; returns the temporary name to bind first."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o700:
        directory.chmod(0o700)
    temporary = directory / f".{path.name}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    return temporary


def _move_into_place(temporary: Path, path: Path) -> os.stat_result:
    if path.exists() or path.is_symlink():
        log.info("replacing stale admin socket %s", path)
    os.replace(temporary, path)
    return path.lstat()


def _unlink_if_present(path: Path) -> None:
    path.unlink(missing_ok=True)


def _remove_if_ours(path: Path, identity: tuple[int, int]) -> None:
    """Remove the socket unless another mount of the same mountpoint replaced it since."""
    try:
        current = path.lstat()
        if (current.st_dev, current.st_ino) == identity:
            path.unlink()
    except OSError:
        pass


class _Server:
    def __init__(self, core: Admin, jobs: trio.Nursery):
        self.core = core
        self.jobs = jobs  # syncs: they outlive the connection (and the wait) that started them

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection; whatever goes wrong with it stays with it."""
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("admin client went away: %s", exc or type(exc).__name__)
        except Exception:
            log.exception("admin connection failed")

    async def _converse(self, stream: trio.SocketStream) -> None:
        line = b""
        with trio.move_on_after(REQUEST_READ_TIMEOUT):
            line = await _read_line(stream, MAX_REQUEST)
        if line is None:
            await _send(stream, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
            await _discard_input(stream)  # closing on unread bytes would reset the connection
            return
        if not line.strip():
            return  # disconnected or silent: nobody to answer
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            await _send(stream, {"ok": False, "error": f"bad request: not JSON: {exc}"})
            return
        try:
            response = await self._answer(request)
        except Exception as exc:
            log.exception("admin request %.200r failed", request)
            response = {"ok": False, "error": f"internal error: {exc}"}
        await _send(stream, response)

    async def _answer(self, request: Any) -> dict:
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad request: expected a JSON object"}
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.core.status()}
        if op == "metrics":
            return {"ok": True, "metrics": self.core.metrics_text()}
        if op == "sync":
            path = request.get("path") or ""
            timeout = request.get("timeout")
            if not isinstance(path, str):
                return {"ok": False, "error": "bad request: path must be a string"}
            if timeout is not None and (isinstance(timeout, bool)
                                        or not isinstance(timeout, (int, float))
                                        or not timeout >= 0):
                return {"ok": False, "error": "bad request: timeout must be seconds >= 0 or null"}
            return await self._sync(path.strip("/"), timeout)
        if op == "refresh":
            path = request.get("path") or ""
            if not isinstance(path, str):
                return {"ok": False, "error": "bad request: path must be a string"}
            try:
                return {"ok": True, "refreshed": await self.core.refresh(path.strip("/"))}
            except FsError as exc:
                return {"ok": False, "error": str(exc)}
        if op in ("versions", "undelete"):
            return await self._versions(op, request)
        if op == "set":
            return self._set(request)
        return {"ok": False, "error": f"unknown op {op!r} (expected 'status', 'metrics', "
                                     "'sync', 'refresh', 'versions', 'undelete' or 'set')"}

    def _set(self, request: dict) -> dict:
        setting, value = request.get("setting"), request.get("value")
        if not isinstance(setting, str) or not isinstance(value, str):
            return {"ok": False, "error": "bad request: setting and value must be strings"}
        try:
            return {"ok": True, "limits": self.core.change_setting(setting, value)}
        except ConfigError as exc:
            return {"ok": False, "error": str(exc)}

    async def _versions(self, op: str, request: dict) -> dict:
        path, version = request.get("path") or "", request.get("version")
        if not isinstance(path, str) or not isinstance(version, (str, type(None))):
            return {"ok": False, "error": "bad request: path and version must be strings"}
        try:
            if op == "versions":
                return {"ok": True, "versions": await self.core.versions(path.strip("/"))}
            return {"ok": True, "restored": await self.core.undelete(path.strip("/"), version)}
        except S3PveFsError as exc:  # StoreError and VersionError among them
            return {"ok": False, "error": str(exc)}

    async def _sync(self, path: str, timeout: float | None) -> dict:
        job = _SyncJob()
        self.jobs.start_soon(job.run, self.core, path)
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await job.done.wait()
        if job.error is not None:
            return {"ok": False, "error": job.error}
        pending = _pending(self.core, path)
        if not job.done.is_set() and pending:
            log.info("sync of %r: client stopped waiting after %s s, %d file(s) pending; "
                     "the uploads go on", path or "/", timeout, pending)
            return {"ok": False, "failures": {}, "timed_out": True, "pending": pending}
        # Done, or nothing left to wait for (a file that failed would still be dirty).
        return {"ok": not job.failures, "failures": job.failures, "timed_out": False,
                "pending": pending}


class _SyncJob:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.failures: dict[str, str] = {}
        self.error: str | None = None

    async def run(self, core: Admin, path: str) -> None:
        try:
            self.failures = dict(await core.sync_path(path))
        except (FsError, StoreError) as exc:
            self.error = str(exc)  # the core's messages name the path
        except Exception as exc:
            log.exception("sync of %r failed", path or "/")
            self.error = f"sync of {path or '/'} failed: {exc}"
        finally:
            self.done.set()


def _pending(core: Admin, path: str) -> int:
    """Files at or below ``path`` whose current state is not on S3 yet."""
    below = path + "/"
    return sum(1 for node in core.dirty_nodes()
               if not path or node.path() == path or node.path().startswith(below))


async def _read_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    """Bytes up to the first newline or EOF; None if there are more than ``limit``."""
    buffer = bytearray()
    while b"\n" not in buffer:
        if len(buffer) > limit:
            return None
        chunk = await stream.receive_some(limit + 1)
        if not chunk:
            break
        buffer += chunk
    line = bytes(buffer).split(b"\n", 1)[0]
    return None if len(line) > limit else line


async def _discard_input(stream: trio.SocketStream, limit: int = 16 * MAX_REQUEST,
                         seconds: float = 1.0) -> None:
    with trio.move_on_after(seconds):
        while limit > 0:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            limit -= len(chunk)


async def _send(stream: trio.SocketStream, response: dict) -> None:
    await stream.send_all(json.dumps(response, default=str).encode() + b"\n")


# -- client (blocking, for the command line) ------------------------------------------------


def request(mountpoint: Path, payload: dict, timeout: float | None, *,
            socket_path: Path | None = None) -> dict:
    """Send one request to the mount at ``mountpoint``; its answer, or ControlError.

    ``timeout`` bounds the wait for the answer (None: wait as long as it takes).
    """
    path = Path(socket_path) if socket_path is not None else control_socket_path(mountpoint)
    where = f"the s3pvefs mount at {mountpoint} (socket {path})"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout if timeout is not None else 30.0)
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            sock.settimeout(timeout)
            answer = _receive_line(sock)
    except FileNotFoundError:
        raise ControlError(f"{where} does not answer: the socket does not exist "
                           "(is the mount running, and was it started by this version?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"{where} does not answer: nothing listens on the socket "
                           "(the mount process is gone)") from None
    except PermissionError:
        raise ControlError(f"cannot reach {where}: permission denied (run as root)") from None
    except TimeoutError:
        raise ControlError(f"{where} did not answer within {timeout} s") from None
    except OSError as exc:
        raise ControlError(f"cannot reach {where}: {exc.strerror or exc}") from None
    if not answer:
        raise ControlError(f"{where} closed the connection without answering")
    try:
        response = json.loads(answer)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"{where} answered something that is not JSON: {answer[:200]!r}") from None
    if not isinstance(response, dict):
        raise ControlError(f"{where} answered an unexpected value: {response!r}")
    return response


def _receive_line(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        if len(buffer) > MAX_RESPONSE:
            raise ControlError(f"answer longer than {MAX_RESPONSE} bytes")
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer).split(b"\n", 1)[0]


# -- which mount a path is on ---------------------------------------------------------------


def find_mountpoint(path: Path | str, mountinfo: str | None = None) -> tuple[Path, str]:
    """The s3pvefs mount that holds ``path``, and the path relative to it ("" for the root).

    Reads /proc/self/mountinfo unless its text is given (tests); the innermost mount wins.
    With the real mountinfo the path's directories are resolved (symlinks), not its last part,
    so a symlink inside the mount means the link itself.
    """
    if mountinfo is None:
        mountinfo = _read_mountinfo()
        target = _resolve_parents(path)
    else:
        target = os.path.abspath(path)
    best: tuple[str, str] | None = None  # (mountpoint, fstype)
    for mountpoint, fstype in _parse_mountinfo(mountinfo):
        inside = (target == mountpoint or mountpoint == "/"
                  or target.startswith(mountpoint + "/"))
        if inside and (best is None or len(mountpoint) >= len(best[0])):
            best = (mountpoint, fstype)  # equal length: a later line is mounted on top
    if best is None or best[1] != FSTYPE:
        where = f" (it is on {best[1]} mounted at {best[0]})" if best else ""
        raise ControlError(f"{path} is not on an s3pvefs mount{where}")
    mountpoint = best[0]
    relative = target[len(mountpoint):].strip("/") if mountpoint != "/" else target.strip("/")
    return Path(mountpoint), relative


def s3pvefs_mountpoints(mountinfo: str | None = None) -> list[Path]:
    """Every s3pvefs mount of this host (of /proc/self/mountinfo, unless its text is given)."""
    if mountinfo is None:
        mountinfo = _read_mountinfo()
    return [Path(mountpoint) for mountpoint, fstype in _parse_mountinfo(mountinfo)
            if fstype == FSTYPE]


def _read_mountinfo() -> str:
    try:
        return MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ControlError(f"cannot read {MOUNTINFO}: {exc.strerror or exc}") from None


def _resolve_parents(path: Path | str) -> str:
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    if not name:
        return absolute  # "/"
    return os.path.join(os.path.realpath(parent), name)


def _parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, fstype) per line of a mountinfo text, in order."""
    mounts = []
    for line in text.splitlines():
        # id parent major:minor root mount-point options [optional...] - fstype source super
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if separator + 1 >= len(fields):
            continue
        mounts.append((_unescape(fields[4]), fields[separator + 1]))
    return mounts


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes: \\040 space, \\011 tab, \\012 newline, \\134 backslash."""
    raw = bytearray()
    i = 0
    encoded = field.encode("utf-8", "surrogateescape")
    while i < len(encoded):
        octal = encoded[i + 1:i + 4]
        if (encoded[i] == 0x5C and len(octal) == 3
                and all(0x30 <= c <= 0x37 for c in octal)):
            raw.append(int(octal, 8))
            i += 4
        else:
            raw.append(encoded[i])
            i += 1
    return raw.decode("utf-8", "surrogateescape")

