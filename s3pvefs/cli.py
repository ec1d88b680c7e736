"""Command line: `s3pvefs mount [options] MOUNTPOINT`, `s3pvefs sync [PATH]`,
`s3pvefs status MOUNTPOINT` and `s3pvefs --version`.

mount: exit status 2 for configuration and environment errors found before mounting; otherwise
the status that `s3pvefs.mount.run_mount` returns. sync and status talk to a running mount over
its admin socket (`s3pvefs.control`): 0 all is well, 1 an upload failed (or sync timed out), 2 the
mount cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import human_size
from .errors import ConfigError

log = logging.getLogger("s3pvefs.cli")

EXIT_CONFIG = 2

# (flag, Config field, metavar, help). All flags default to None: a flag only wins when given.
_VALUE_FLAGS: list[tuple[str, str, str, str]] = [
    # S3
    ("--endpoint-url", "endpoint_url", "URL", "S3 endpoint, http(s)://host[:port] (default: AWS)"),
    ("--region", "region", "REGION", "region to sign requests for (default us-east-1)"),
    ("--bucket", "bucket", "NAME", "bucket to mount"),
    ("--prefix", "prefix", "P", "key prefix that is the root of the mount (default: none)"),
    ("--addressing-style", "addressing_style", "STYLE", "auto, path or virtual (default auto)"),
    ("--profile", "profile", "NAME", "AWS profile of ~/.aws/config and ~/.aws/credentials"),
    ("--ca-bundle", "ca_bundle", "FILE", "CA certificates (PEM) to verify the endpoint with"),
    ("--connect-timeout", "connect_timeout", "SECONDS", "TCP connect timeout (default 10)"),
    ("--read-timeout", "read_timeout", "SECONDS", "socket read timeout (default 60)"),
    ("--max-attempts", "max_attempts", "N", "attempts per request, retries included (default 5)"),
    ("--retry-mode", "retry_mode", "MODE", "standard or adaptive (default standard)"),
    ("--max-connections", "max_connections", "N", "HTTP connections / requests in flight (default 16)"),
    # Cache and uploads
    ("--cache-dir", "cache_dir", "DIR", "local cache directory (default /var/cache/s3pvefs)"),
    ("--cache-size", "cache_size", "SIZE", "cache size limit, e.g. 10G (default 10GiB)"),
    ("--block-size", "block_size", "SIZE", "cache block size, power of two (default 1MiB)"),
    ("--part-size", "part_size", "SIZE", "minimum multipart part size (default 16MiB)"),
    ("--multipart-threshold", "multipart_threshold", "SIZE", "files from this size use multipart (default 16MiB)"),
    ("--upload-concurrency", "upload_concurrency", "N", "parts uploaded in parallel (default 4)"),
    ("--durability", "durability", "WHERE", "what fsync waits for: journal (local disk, default) or s3"),
    # Mount
    ("--uid", "uid", "UID", "owner of objects without s3pvefs metadata (default 0)"),
    ("--gid", "gid", "GID", "group of objects without s3pvefs metadata (default 0)"),
    ("--file-mode", "file_mode", "MODE", "mode of such files, octal (default 0644)"),
    ("--dir-mode", "dir_mode", "MODE", "mode of such directories, octal (default 0755)"),
    ("--capacity", "capacity", "SIZE", "total size that statfs/df reports (default 1PiB)"),
    ("--dir-ttl", "dir_ttl", "SECONDS", "how long a directory listing is trusted (default 10)"),
    ("--attr-ttl", "attr_ttl", "SECONDS", "kernel attribute/entry cache time (default 1)"),
    # Logging
    ("--log-level", "log_level", "LEVEL", "debug, info, warning, error (default info)"),
    ("--log-file", "log_file", "FILE", "log to this file instead of stderr"),
]

_BOOL_FLAGS: list[tuple[str, str, str]] = [
    ("--create-bucket", "create_bucket", "create the bucket if it does not exist"),
    ("--verify-tls", "verify_tls", "verify the endpoint's TLS certificate (default yes)"),
    ("--allow-other", "allow_other", "let users other than root access the mount"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3pvefs",
        description="Mount an S3 bucket as a directory for a Proxmox VE 'dir' storage.",
    )
    parser.add_argument("--version", action="version", version=f"s3pvefs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    mount = sub.add_parser(
        "mount",
        help="mount a bucket and stay in the foreground until unmounted",
        description=(
            "Mount an S3 bucket at MOUNTPOINT and stay in the foreground until SIGTERM, SIGINT "
            "or fusermount3 -u. Settings come from --config FILE and flags (flags win). "
            "Credentials: [credentials] in the config file, else the standard AWS chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws files, --profile). With neither "
            "an endpoint nor a bucket, an embedded local S3 is started whose data is lost at "
            "unmount."
        ),
    )
    mount.add_argument("--config", metavar="FILE", type=Path, default=None,
                       help="TOML configuration file")
    for flag, dest, metavar, help_text in _VALUE_FLAGS:
        mount.add_argument(flag, dest=dest, metavar=metavar, default=None, help=help_text)
    for flag, dest, help_text in _BOOL_FLAGS:
        mount.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                       help="empty directory to mount on")
    mount.set_defaults(handler=cmd_mount)

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
            "flight with their progress and rate, and the files whose upload failed. Exit "
            "status: 0; 1 when there are upload errors; 2 the mount does not answer."
        ),
    )
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
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

    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [dest for _f, dest, _m, _h in _VALUE_FLAGS] + [dest for _f, dest, _h in _BOOL_FLAGS]
    return {name: getattr(args, name) for name in names}


def _error(message: str, log_file_active: bool = False) -> None:
    print(f"s3pvefs: error: {message}", file=sys.stderr, flush=True)
    if log_file_active:
        log.error("%s", message)


def cmd_mount(args: argparse.Namespace) -> int:
    from . import preflight
    from .config import load_config
    from .logsetup import setup_logging

    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    try:
        setup_logging(config)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    to_file = config.log_file is not None
    try:
        mountpoint = preflight.check_mountpoint(args.mountpoint)
        preflight.check_fuse(allow_other=config.allow_other)
        preflight.check_local_paths(mountpoint, config.cache_dir, config.log_file)
    except ConfigError as exc:
        _error(str(exc), to_file)
        return EXIT_CONFIG

    local = None
    try:
        if config.endpoint_url is None and config.bucket is None:
            from .embedded import start_local_s3

            try:
                local = start_local_s3()
            except ConfigError as exc:
                _error(str(exc), to_file)
                return EXIT_CONFIG
            config = local.configure(config)
            print(
                "s3pvefs: no endpoint or bucket configured: using an EMBEDDED LOCAL S3 "
                f"(moto at {config.endpoint_url}, bucket {config.bucket}).\n"
                "s3pvefs: it is a throw-away store: everything written to "
                f"{mountpoint} is LOST at unmount.\n"
                "s3pvefs: configure a real endpoint with --endpoint-url/--bucket or --config FILE.",
                file=sys.stderr,
                flush=True,
            )
        log.info("s3pvefs %s mounting %s at %s", __version__, _where(config), mountpoint)
        log.debug("configuration: %s", config.redacted())

        from .mount import run_mount

        return run_mount(config, mountpoint)
    except KeyboardInterrupt:
        _error("interrupted", to_file)
        return 130
    finally:
        if local is not None:
            local.stop()


def _where(config: Any) -> str:
    endpoint = config.endpoint_url or "AWS S3"
    return f"s3://{config.bucket}/{config.prefix} on {endpoint}"


# -- admin commands: talk to a running mount ---------------------------------------------------

EXIT_UPLOAD_FAILED = 1
STATUS_TIMEOUT = 30.0  # seconds to wait for a status answer
SYNC_ANSWER_MARGIN = 30.0  # the mount answers at --timeout; the client gives it this much more


def _locate(path: Path) -> tuple[Path, str]:
    """(mountpoint, path relative to it) of a path on a running s3pvefs mount, or ControlError.

    A mountpoint that no longer shows in the mount table but whose admin socket still exists
    (a mount uploading what is left after fusermount3 -u) is reachable too.
    """
    from .control import ControlError, control_socket_path, find_mountpoint

    try:
        return find_mountpoint(path)
    except ControlError:
        given = Path(os.path.realpath(path))
        if control_socket_path(given).exists():
            return given, ""
        raise


def cmd_sync(args: argparse.Namespace) -> int:
    from .control import ControlError, request

    try:
        os.lstat(args.path)
    except OSError as exc:
        _error(f"{args.path}: {exc.strerror}")
        return EXIT_CONFIG
    try:
        mountpoint, relative = _locate(args.path)
        wait = None if args.timeout is None else args.timeout + SYNC_ANSWER_MARGIN
        answer = request(mountpoint, {"op": "sync", "path": relative, "timeout": args.timeout},
                         wait)
    except ControlError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _error("interrupted (the uploads go on in the mount)")
        return 130
    if "error" in answer:
        _error(str(answer["error"]))
        return EXIT_CONFIG
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
    from .control import ControlError, request

    try:
        mountpoint, relative = _locate(args.mountpoint)
        path = "/".join(filter(None, [relative, args.path.strip("/")]))
        answer = request(mountpoint, {"op": "refresh", "path": path}, STATUS_TIMEOUT)
    except ControlError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    if not answer.get("ok"):
        _error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return EXIT_CONFIG
    print(f"{mountpoint}: forgot {answer['refreshed']} cached entries")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .control import ControlError, request

    try:
        mountpoint, _relative = _locate(args.mountpoint)
        answer = request(mountpoint, {"op": "status"}, STATUS_TIMEOUT)
    except ControlError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    status = answer.get("status")
    if not answer.get("ok") or not isinstance(status, dict):
        _error(f"{mountpoint}: {answer.get('error', 'unexpected answer')}")
        return EXIT_CONFIG
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(_format_status(mountpoint, status), end="")
    return EXIT_UPLOAD_FAILED if status.get("errors") else 0


def _format_status(mountpoint: Path, status: dict) -> str:
    uploads = status.get("uploads") or []
    errors = status.get("errors") or []
    lines = [
        f"{mountpoint}",
        f"  not on S3 yet:  {status.get('dirty_files', 0)} file(s), "
        f"{human_size(status.get('dirty_bytes', 0))} dirty in the cache",
        f"  cache:          {human_size(status.get('cache_used_bytes', 0))} used of "
        f"{human_size(status.get('cache_limit_bytes', 0))}",
        f"  uploading:      {len(uploads)} file(s)",
    ]
    for upload in uploads:
        total, done = upload.get("bytes_total", 0), upload.get("bytes_done", 0)
        percent = 100.0 * done / total if total else 100.0
        rate = upload.get("bytes_per_second", 0) / 1024**2
        lines.append(f"    {upload.get('path')}  {percent:5.1f}% of {human_size(total)}  "
                     f"{rate:.1f} MiB/s")
    lines.append(f"  upload errors:  {len(errors)}")
    for error in errors:
        lines.append(f"    {error.get('path')}: {error.get('error')}")
    return "\n".join(lines) + "\n"




def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
