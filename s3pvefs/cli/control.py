"""`s3pvefs sync`, `status`, `refresh`, `mounts` and `set`: their flags, and the commands, which
talk to running mounts over their admin sockets (``control.py``). Exit status: 0 all is well, 1
an upload failed (or sync timed out), 2 the mount cannot be reached. Also the text `status`
prints.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from s3pvefs.config.values import human_size
from s3pvefs.errors import print_error

EXIT_UPLOAD_FAILED = 1
EXIT_NO_MOUNT = 2  # PATH is not on a mount, or the mount does not answer
STATUS_TIMEOUT = 30.0  # seconds to wait for a status answer
SYNC_ANSWER_MARGIN = 30.0  # the mount answers at --timeout; the client gives it this much more


def add_parsers(sub: Any) -> None:
    """The subcommands that talk to a running mount (called from cli.build_parser)."""
    sync = sub.add_parser(
        "sync",
        help="upload everything not yet on S3 now and wait for it",
        description=(
            "Upload every file of a running mount that is not on S3 yet (or only PATH: one file "
            "or a directory tree) and wait until it is there, even files still open for "
            "writing. Exit status: 0 everything is on S3; 1 an upload failed (one line per "
            "file on stderr) or the timeout passed (the uploads go on in the mount); 2 PATH is "
            "not on an s3pvefs mount or the mount does not answer."
        ),
    )
    sync.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=None,
                      help="stop waiting after this long (default: wait as long as it takes)")
    sync.add_argument("path", metavar="PATH", type=Path, nargs="?", default=Path("."),
                      help="file, directory or mountpoint (default: the current directory)")
    sync.set_defaults(handler=cmd_sync)

    status = sub.add_parser(
        "status",
        help="show data not yet on S3, uploads in flight and upload errors",
        description=(
            "Show what a running mount has not uploaded yet, the cache use, the uploads in "
            "flight with their progress and rate, and the files whose upload failed; or, with "
            "--prometheus, its metrics (docs/metrics.md). Exit status: 0; 1 when there are "
            "upload errors (not with --prometheus: the metrics show them); 2 the mount does "
            "not answer."
        ),
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the raw status as JSON")
    shown.add_argument("--prometheus", action="store_true",
                       help="print the mount's metrics in the Prometheus text format (for "
                            "node_exporter's textfile collector)")
    status.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                        help="the mountpoint (or any path in the mount)")
    status.set_defaults(handler=cmd_status)

    refresh = sub.add_parser(
        "refresh",
        help="forget cached listings and attributes (another host changed the bucket)",
        description=(
            "Make a running mount forget what it cached about directories and files at or "
            "below PATH, so that objects another host wrote or deleted show at once instead of "
            "after dir_ttl. Data not yet on S3 is kept. Exit status: 0; 2 the mount does not "
            "answer."
        ),
    )
    refresh.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                         help="the mountpoint, or a directory in the mount")
    refresh.add_argument("path", metavar="PATH", nargs="?", default="",
                         help="directory below the mountpoint (default: all of it)")
    refresh.set_defaults(handler=cmd_refresh)

    mounts = sub.add_parser(
        "mounts",
        help="list this host's s3pvefs mounts: idle, busy or not answering",
        description=(
            "List every s3pvefs mount of this host, one line each, tab-separated: the "
            "mountpoint, its state, and what makes it busy. idle: nothing waits for S3 and no "
            "file is open (stopping or restarting it loses nothing and disturbs nobody); busy: "
            "files not on S3 yet, uploads in flight or open files; unresponsive: the mount "
            "does not answer. The package's maintainer scripts use it: an upgrade restarts "
            "only idle mounts, a removal refuses while one is not idle. Exit status: 0 every "
            "mount is idle (or there is none); 1 some mount is busy or unresponsive; 2 the "
            "mount table cannot be read."
        ),
    )
    mounts.set_defaults(handler=cmd_mounts)

    setting = sub.add_parser(
        "set",
        help="change a bandwidth or request-rate limit of a running mount",
        description=(
            "Change a limit of a running mount until it ends (the configuration file sets "
            "them at the next mount). SETTING: bwlimit (both directions), upload.bwlimit, "
            "download.bwlimit: a rate such as 20MiB, off, or a timetable of the day such as "
            "\"08:00,20MiB 19:00,off\"; max_request_rate: S3 requests per second, 0 for no "
            "cap. Exit status: 0; 1 the value is not valid; 2 the mount does not answer."
        ),
    )
    setting.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                         help="the mountpoint (or any path in the mount)")
    setting.add_argument("setting", metavar="SETTING",
                         help="bwlimit, upload.bwlimit, download.bwlimit or max_request_rate")
    setting.add_argument("value", metavar="VALUE", help="the new value")
    setting.set_defaults(handler=cmd_set)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def locate(path: Path) -> tuple[Path, str]:
    """(mountpoint, path relative to it) of a path on a running s3pvefs mount, or ControlError.

    A mountpoint that no longer shows in the mount table but whose admin socket still exists
    (a mount uploading what is left after fusermount3 -u) is reachable too.
    """
    from s3pvefs.service.control import (
        ControlError,
        control_socket_path,
        find_mountpoint,
    )

    try:
        return find_mountpoint(path)
    except ControlError:
        given = Path(os.path.realpath(path))
        if control_socket_path(given).exists():
            return given, ""
        raise


def cmd_sync(args: argparse.Namespace) -> int:
    from s3pvefs.service.control import ControlError, request

    try:
        os.lstat(args.path)
    except OSError as exc:
        print_error(f"{args.path}: {exc.strerror}")
        return EXIT_NO_MOUNT
    try:
        mountpoint, relative = locate(args.path)
        wait = None if args.timeout is None else args.timeout + SYNC_ANSWER_MARGIN
        answer = request(mountpoint, {"op": "sync", "path": relative, "timeout": args.timeout},
                         wait)
    except ControlError as exc:
        print_error(str(exc))
        return EXIT_NO_MOUNT
    except KeyboardInterrupt:
        print_error("interrupted (the uploads go on in the mount)")
        return 130
    if "error" in answer:
        print_error(str(answer["error"]))
        return EXIT_NO_MOUNT
    failures = answer.get("failures") or {}
    for path, message in sorted(failures.items()):
        print(f"s3pvefs: sync: {mountpoint / path}: {message}", file=sys.stderr)
    if answer.get("timed_out"):
        print(f"s3pvefs: sync: timed out after {args.timeout:g} s, "
              f"{answer.get('pending', '?')} files still pending", file=sys.stderr)
        return EXIT_UPLOAD_FAILED
    if failures or not answer.get("ok"):
        return EXIT_UPLOAD_FAILED
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from s3pvefs.service.control import ControlError, request

    try:
        mountpoint, relative = locate(args.mountpoint)
        path = "/".join(filter(None, [relative, args.path.strip("/")]))
        answer = request(mountpoint, {"op": "refresh", "path": path}, STATUS_TIMEOUT)
    except ControlError as exc:
        print_error(str(exc))
        return EXIT_NO_MOUNT
    if not answer.get("ok"):
        print_error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return EXIT_NO_MOUNT
    print(f"{mountpoint}: forgot {answer['refreshed']} cached entries")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    from s3pvefs.service.control import ControlError, request

    try:
        mountpoint, _relative = locate(args.mountpoint)
        answer = request(mountpoint, {"op": "set", "setting": args.setting,
                                      "value": args.value}, STATUS_TIMEOUT)
    except ControlError as exc:
        print_error(str(exc))
        return EXIT_NO_MOUNT
    if not answer.get("ok") or not isinstance(answer.get("limits"), dict):
        print_error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return 1
    for name, value in answer["limits"].items():
        print(f"{name} = {value}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from s3pvefs.service.control import ControlError, request

    try:
        mountpoint, _relative = locate(args.mountpoint)
        answer = request(mountpoint, {"op": "metrics" if args.prometheus else "status"},
                         STATUS_TIMEOUT)
    except ControlError as exc:
        print_error(str(exc))
        return EXIT_NO_MOUNT
    if args.prometheus:
        return _print_metrics(mountpoint, answer)
    status = answer.get("status")
    if not answer.get("ok") or not isinstance(status, dict):
        print_error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return EXIT_NO_MOUNT
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(mountpoint, status), end="")
    return EXIT_UPLOAD_FAILED if status.get("errors") else 0


def _print_metrics(mountpoint: Path, answer: dict) -> int:
    text = answer.get("metrics")
    if not answer.get("ok") or not isinstance(text, str):
        print_error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return EXIT_NO_MOUNT
    sys.stdout.write(text)
    return 0


MOUNTS_TIMEOUT = 10.0  # seconds a mount has to answer `s3pvefs mounts`


def cmd_mounts(args: argparse.Namespace) -> int:
    from s3pvefs.service.control import ControlError, request, s3pvefs_mountpoints

    try:
        mountpoints = s3pvefs_mountpoints()
    except ControlError as exc:
        print_error(str(exc))
        return EXIT_NO_MOUNT
    all_idle = True
    for mountpoint in mountpoints:
        try:
            answer = request(mountpoint, {"op": "status"}, MOUNTS_TIMEOUT)
            status = answer.get("status") if answer.get("ok") else None
        except ControlError as exc:
            status, why = None, str(exc)
        else:
            why = "no status in its answer"
        state, details = ("unresponsive", why) if not isinstance(status, dict) \
            else mount_state(status)
        all_idle = all_idle and state == "idle"
        print(f"{mountpoint}\t{state}\t{details}")
    return 0 if all_idle else 1


def mount_state(status: dict) -> tuple[str, str]:
    """("idle" or "busy", what keeps it busy) of a mount's status answer."""
    busy = []
    if status.get("dirty_files"):
        busy.append(f"{status['dirty_files']} file(s) not on S3 yet "
                    f"({human_size(status.get('dirty_bytes', 0))} only in the cache)")
    if status.get("uploads"):
        busy.append(f"{len(status['uploads'])} upload(s) in flight")
    if status.get("open_files"):
        busy.append(f"{status['open_files']} open file(s)")
    return ("busy", "; ".join(busy)) if busy else ("idle", "")


STATUS_WAITING_SHOWN = 20  # dirty files not uploading listed by name; the rest are counted


def _percent(done: int, total: int) -> str:
    """Rounded down: 100.0% only when all of it is done."""
    if not total:
        return "100.0%" if done >= total else "0.0%"
    return f"{math.floor(1000 * done / total) / 10:5.1f}%"


def format_status(mountpoint: Path, status: dict) -> str:
    """What `s3pvefs status` prints for a mount's status answer (without --json)."""
    uploads = status.get("uploads") or []
    errors = status.get("errors") or []
    waiting = [file for file in status.get("files") or [] if not file.get("uploading")]
    lines = [
        f"{mountpoint}",
        f"  not on S3 yet:  {status.get('dirty_files', 0)} file(s), "
        f"{human_size(status.get('dirty_bytes', 0))} dirty in the cache, "
        f"{human_size(status.get('uploaded_bytes', 0))} uploaded in parts not completed yet",
        f"  cache:          {human_size(status.get('cache_used_bytes', 0))} used of "
        f"{human_size(status.get('cache_limit_bytes', 0))}",
        f"  uploading:      {len(uploads)} file(s)",
    ]
    limits = status.get("limits")
    if limits:
        rate = limits.get("max_request_rate")
        lines.insert(3, f"  limits:         upload {limits.get('upload.bwlimit')}, download "
                        f"{limits.get('download.bwlimit')}, requests "
                        f"{f'{rate:g}/s' if rate else 'no cap'}")
    for upload in uploads:
        total, done = upload.get("bytes_total", 0), upload.get("bytes_done", 0)
        rate = upload.get("bytes_per_second", 0) / 1024**2
        lines.append(f"    {upload.get('path')}  {_percent(done, total)} uploaded "
                     f"({human_size(done)} of {human_size(total)}), "
                     f"{human_size(upload.get('bytes_dirty', 0))} dirty  {rate:.1f} MiB/s")
    if waiting:
        lines.append(f"  waiting:        {len(waiting)} file(s)")
        for file in waiting[:STATUS_WAITING_SHOWN]:
            why = f" ({file['waiting']})" if file.get("waiting") else ""
            lines.append(f"    {file.get('path')}  {human_size(file.get('bytes_dirty', 0))} "
                         f"dirty of {human_size(file.get('bytes_total', 0))}{why}")
        if len(waiting) > STATUS_WAITING_SHOWN:
            lines.append(f"    ... and {len(waiting) - STATUS_WAITING_SHOWN} more (--json "
                         "lists them all)")
    lines.append(f"  upload errors:  {len(errors)}")
    for error in errors:
        lines.append(f"    {error.get('path')}: {error.get('error')}")
    return "\n".join(lines) + "\n"
