"""Command line: `s3pvefs mount [options] MOUNTPOINT` and `s3pvefs --version`.

Exit status 2 for configuration and environment errors found before mounting; otherwise the
status that `s3pvefs.mount.run_mount` returns.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
