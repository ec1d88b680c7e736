"""Command line: `s3pvefs mount [options] MOUNTPOINT`, `s3pvefs sync [PATH]`,
`s3pvefs status MOUNTPOINT`, `s3pvefs check|info|lifecycle [options]` and `s3pvefs --version`.

mount: exit status 2 for configuration and environment errors found before mounting; otherwise
the status that `s3pvefs.mount.run_mount` returns. sync and status talk to a running mount over
its admin socket (`s3pvefs.control`): 0 all is well, 1 an upload failed (or sync timed out), 2 the
mount cannot be reached. check, info and lifecycle talk to the bucket directly with the mount's
settings (`s3pvefs.admin`): 0 all is well, 1 a check or an S3 request failed, 2 configuration.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .bench import add_parser as add_bench_parser
from .configvalues import human_size
from .errors import ConfigError, print_error

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
    # New objects
    ("--storage-class", "storage_class", "CLASS", "storage class of new objects, e.g. STANDARD_IA (default: the server's)"),
    ("--storage-class-by-dir", "storage_class_by_dir", "DIR=CLASS,...", "storage class per content directory, e.g. dump=STANDARD_IA,template=STANDARD"),
    ("--sse", "sse", "MODE", "server-side encryption: none, AES256, aws:kms or SSE-C (default none)"),
    ("--kms-key-id", "kms_key_id", "KEY", "KMS key (id, ARN or alias) for --sse aws:kms"),
    ("--sse-customer-key-file", "sse_customer_key_file", "FILE", "SSE-C key: chmod 600 file with 32 raw bytes or their base64"),
    # Cache and uploads
    ("--cache-dir", "cache_dir", "DIR", "local cache directory (default /var/cache/s3pvefs)"),
    ("--cache-size", "cache_size", "SIZE", "cache size limit, e.g. 10G (default 10GiB)"),
    ("--block-size", "block_size", "SIZE", "cache block size, power of two (default 1MiB)"),
    ("--part-size", "part_size", "SIZE", "minimum multipart part size (default 16MiB)"),
    ("--multipart-threshold", "multipart_threshold", "SIZE", "files from this size use multipart (default 16MiB)"),
    ("--upload-concurrency", "upload_concurrency", "N", "parts uploaded in parallel (default 4)"),
    ("--readahead-max", "readahead_max", "SIZE", "how far ahead sequential reads fetch at most (default 64MiB)"),
    ("--prefetch-small", "prefetch_small", "SIZE", "notes/logs/configs up to this size are fetched when listed (default 64KiB, 0 = off)"),
    ("--durability", "durability", "WHERE", "what fsync waits for: journal (local disk, default) or s3"),
    # Mount
    ("--uid", "uid", "UID", "owner of objects without s3pvefs metadata (default 0)"),
    ("--gid", "gid", "GID", "group of objects without s3pvefs metadata (default 0)"),
    ("--file-mode", "file_mode", "MODE", "mode of such files, octal (default 0644)"),
    ("--dir-mode", "dir_mode", "MODE", "mode of such directories, octal (default 0755)"),
    ("--capacity", "capacity", "SIZE", "total size that statfs/df reports (default 1PiB)"),
    ("--dir-ttl", "dir_ttl", "SECONDS", "how long a directory listing is trusted (default 10)"),
    ("--attr-ttl", "attr_ttl", "SECONDS", "kernel attribute/entry cache time (default 1)"),
    ("--negative-ttl", "negative_ttl", "SECONDS", "how long the kernel remembers a missing name (default 1)"),
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
    _add_config_arguments(mount)
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

    _add_admin_parsers(sub)
    add_bench_parser(sub)  # the flags only: the harness is imported when `bench` runs
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and every setting's flag: mount, check, info and lifecycle share them."""
    parser.add_argument("--config", metavar="FILE", type=Path, default=None,
                        help="TOML configuration file")
    for flag, dest, metavar, help_text in _VALUE_FLAGS:
        parser.add_argument(flag, dest=dest, metavar=metavar, default=None, help=help_text)
    for flag, dest, help_text in _BOOL_FLAGS:
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                            default=None, help=help_text)
    for flag in _SECRET_FLAGS:
        parser.add_argument(flag, action=_RefuseSecret, help=argparse.SUPPRESS)


# Secrets on the command line are readable by every user in `ps` and /proc/PID/cmdline, and
# argparse would repeat an unknown flag's value in its error: refuse them by name instead.
_SECRET_FLAGS = ("--secret-access-key", "--aws-secret-access-key", "--session-token",
                 "--aws-session-token", "--sse-customer-key")


class _RefuseSecret(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(
            f"{option_string} is not accepted: a secret on the command line is visible to "
            "every user (ps, /proc/PID/cmdline). Put keys in [credentials] of a chmod 600 "
            "--config FILE or in the environment (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), "
            "and an SSE-C key in a chmod 600 file (--sse-customer-key-file)"
        )


def _add_admin_parsers(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="check the endpoint, credentials, bucket and S3 features a mount needs",
        description=(
            "Connect with the same settings as a mount (--config FILE and/or flags) and check: "
            "the credentials, that the bucket exists and can be listed (with --create-bucket "
            "it is created if missing, as a mount would), a PUT, GET, ranged GET and delete of "
            "a probe object under the prefix, the configured encryption and storage classes, "
            "multipart uploads, the ETag in the CompleteMultipartUpload answer, UploadPartCopy, "
            "x-amz-copy-source-if-match, and the round-trip latency. What s3pvefs works "
            "without is a warning (WARN) that says what it costs. Every probe object and "
            "upload is removed afterwards. Exit status: 0 all checks passed, with or without "
            "warnings (one line per warning on stderr); 1 a check failed: the storage would not "
            "work (one line per failure on stderr); 2 configuration error."
        ),
    )
    _add_config_arguments(check)
    check.set_defaults(handler=cmd_check)

    info = sub.add_parser(
        "info",
        help="objects and bytes per content directory and storage class",
        description=(
            "List every object under the prefix and show the count and size per Proxmox "
            "content directory (dump, images, template/iso, template/cache, snippets, private, "
            "import, other) and storage class, s3pvefs's own objects apart, and the number of "
            "incomplete multipart uploads. Exit status: 0; 1 S3 error; 2 configuration error."
        ),
    )
    _add_config_arguments(info)
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    info.set_defaults(handler=cmd_info)

    lifecycle = sub.add_parser(
        "lifecycle",
        help="write the bucket lifecycle rule for the prefix (transitions, abort uploads)",
        description=(
            "Write one lifecycle rule (ID s3pvefs-PREFIX) scoped to the prefix: objects move "
            "to STANDARD_IA after --transition-days, to GLACIER after --glacier-days, and "
            "incomplete multipart uploads are aborted after --abort-incomplete-days (default "
            f"{DEFAULT_ABORT_DAYS}). The bucket's other rules are kept. Prints the resulting "
            "configuration. Objects in GLACIER cannot be read through the mount before they "
            "are restored. Exit status: 0; 1 S3 error; 2 invalid arguments or configuration."
        ),
    )
    _add_config_arguments(lifecycle)
    lifecycle.add_argument("--transition-days", metavar="N", type=_days, default=None,
                           help="move objects to STANDARD_IA after N days (at least 30)")
    lifecycle.add_argument("--glacier-days", metavar="M", type=_days, default=None,
                           help="move objects to GLACIER after M days (at least N + 30)")
    lifecycle.add_argument("--abort-incomplete-days", metavar="K", type=_days,
                           default=DEFAULT_ABORT_DAYS,
                           help=f"abort multipart uploads K days after they started "
                                f"(default {DEFAULT_ABORT_DAYS})")
    lifecycle.add_argument("--remove", action="store_true",
                           help="remove s3pvefs's rule for the prefix instead")
    lifecycle.add_argument("--dry-run", action="store_true",
                           help="print the resulting configuration without writing it")
    lifecycle.set_defaults(handler=cmd_lifecycle)


DEFAULT_ABORT_DAYS = 7  # the same as admin.DEFAULT_ABORT_DAYS (not imported: keeps --help fast)


def _days(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [dest for _f, dest, _m, _h in _VALUE_FLAGS] + [dest for _f, dest, _h in _BOOL_FLAGS]
    return {name: getattr(args, name) for name in names}


def _error(message: str, log_file_active: bool = False) -> None:
    print_error(message, log if log_file_active else None)


def cmd_mount(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil

    from . import preflight
    from .config import Config
    from .configfile import load_config
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
    demo_cache: Path | None = None
    try:
        if config.endpoint_url is None and config.bucket is None:
            from .embedded import demo_cache_dir, start_local_s3

            try:
                local = start_local_s3()
                if args.cache_dir is None and config.cache_dir == Config().cache_dir:
                    # Throw-away data stays out of the production cache (and its journal).
                    demo_cache = demo_cache_dir()
                    config = dataclasses.replace(config, cache_dir=demo_cache)
                    preflight.check_local_paths(mountpoint, config.cache_dir, config.log_file)
            except ConfigError as exc:
                _error(str(exc), to_file)
                return EXIT_CONFIG
            config = local.configure(config)
            where = (f"its cache {demo_cache} is removed at exit too" if demo_cache else
                     f"cache {config.cache_dir}")
            print(
                "s3pvefs: no endpoint or bucket configured: using an EMBEDDED LOCAL S3 "
                f"(moto at {config.endpoint_url}, bucket {config.bucket}).\n"
                "s3pvefs: it is a throw-away store: everything written to "
                f"{mountpoint} is LOST at unmount ({where}).\n"
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
        if demo_cache is not None:
            shutil.rmtree(demo_cache, ignore_errors=True)


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


STATUS_WAITING_SHOWN = 20  # dirty files not uploading listed by name; the rest are counted


def _percent(done: int, total: int) -> str:
    """Rounded down: 100.0% only when all of it is done."""
    if not total:
        return "100.0%" if done >= total else "0.0%"
    return f"{math.floor(1000 * done / total) / 10:5.1f}%"


def _format_status(mountpoint: Path, status: dict) -> str:
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


# -- admin commands: talk to the bucket directly ----------------------------------------------

EXIT_CHECK_FAILED = 1
EXIT_S3_ERROR = 1


def _admin_config(args: argparse.Namespace) -> Any:
    """The validated configuration of check/info/lifecycle with logging set up; or an exit
    status after printing why there is none."""
    from .configfile import load_config
    from .logsetup import setup_logging

    try:
        config = load_config(args.config, _overrides(args))
        setup_logging(config)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    if not config.bucket:
        _error("no bucket configured: give --bucket NAME (and --endpoint-url URL unless it is "
               "AWS) or --config FILE")
        return EXIT_CONFIG
    log.debug("configuration: %s", config.redacted())
    if config.log_level != "DEBUG":
        # These commands report failed requests themselves; the store's warnings would say
        # everything twice.
        logging.getLogger("s3pvefs.store").setLevel(logging.ERROR)
    return config


def _run_with_store(config: Any, work: Any, *args: Any) -> Any:
    """Run `work(store, *args)` on a store opened from `config` in a fresh trio run."""
    import trio

    from .store import open_s3_store

    async def main() -> Any:
        async with open_s3_store(config) as store:
            return await work(store, *args)

    return trio.run(main)


def cmd_check(args: argparse.Namespace) -> int:
    from . import admin

    config = _admin_config(args)
    if isinstance(config, int):
        return config
    try:
        results = _run_with_store(config, admin.run_checks, config)
    except ConfigError as exc:
        _error(str(exc), config.log_file is not None)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    print(admin.format_checks(config, results), end="", flush=True)
    failed = [result for result in results if result.ok is False]
    for result in results:
        if result.ok and result.warning:
            print(f"s3pvefs: check warning: {result.name}: {result.detail}", file=sys.stderr)
    for result in failed:
        print(f"s3pvefs: check failed: {result.name}: {result.detail}", file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import admin
    from .errors import StoreError

    config = _admin_config(args)
    if isinstance(config, int):
        return config
    try:
        usage = _run_with_store(config, admin.collect_usage, config.prefix)
    except ConfigError as exc:
        _error(str(exc), config.log_file is not None)
        return EXIT_CONFIG
    except StoreError as exc:
        _error(str(exc), config.log_file is not None)
        return EXIT_S3_ERROR
    if args.json:
        print(admin.usage_as_json(config, usage), end="")
    else:
        print(admin.format_usage(config, usage), end="")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from . import admin
    from .errors import StoreError

    plan = admin.LifecyclePlan(args.transition_days, args.glacier_days,
                               args.abort_incomplete_days, args.remove)
    try:
        plan.validate()
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    config = _admin_config(args)
    if isinstance(config, int):
        return config
    try:
        result = _run_with_store(config, admin.apply_lifecycle, config.prefix, plan,
                                 args.dry_run)
    except ConfigError as exc:
        _error(str(exc), config.log_file is not None)
        return EXIT_CONFIG
    except StoreError as exc:
        _error(str(exc), config.log_file is not None)
        return EXIT_S3_ERROR
    if args.dry_run:
        print("s3pvefs: dry run: the bucket's lifecycle configuration would become:",
              file=sys.stderr)
    print(admin.lifecycle_as_json(result), end="")
    if plan.glacier_days is not None and not plan.remove:
        print("s3pvefs: note: objects moved to GLACIER cannot be read through the mount "
              "before they are restored", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
