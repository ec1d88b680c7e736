"""Command line: `s3pvefs mount [options] MOUNTPOINT`, `s3pvefs sync [PATH]`,
`s3pvefs status MOUNTPOINT`, `s3pvefs check|info|lifecycle [options]` and `s3pvefs --version`.

This module is the entry point (``main``), the parser and `mount`; the other subcommands bring
their own flags: sync, status and refresh (``clicontrol.py``), check, info and lifecycle
(``cliadmin.py``), bench (``bench/``). The settings' flags are in ``clisettings.py``.

mount: exit status 2 for configuration and environment errors found before mounting; otherwise
the status that `s3pvefs.service.mount.run_mount` returns. sync and status talk to a running mount over
its admin socket (`s3pvefs.service.control`): 0 all is well, 1 an upload failed (or sync timed out), 2 the
mount cannot be reached. check, info and lifecycle talk to the bucket directly with the mount's
settings (`s3pvefs.service.admin`): 0 all is well, 1 a check or an S3 request failed, 2 configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from s3pvefs import __version__
from s3pvefs.bench import add_parser as add_bench_parser
from s3pvefs.cli import admin as cliadmin
from s3pvefs.cli import control as clicontrol
from s3pvefs.cli import verify as cliverify
from s3pvefs.cli import versions as cliversions
from s3pvefs.cli.settings import (
    EXIT_CONFIG,
    add_config_arguments,
    overrides,
    report_error,
)
from s3pvefs.errors import ConfigError

log = logging.getLogger("s3pvefs.cli.main")


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
    add_config_arguments(mount)
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                       help="empty directory to mount on")
    mount.set_defaults(handler=cmd_mount)

    clicontrol.add_parsers(sub)
    cliadmin.add_parsers(sub)
    cliverify.add_parser(sub)
    cliversions.add_parsers(sub)
    add_bench_parser(sub)  # the flags only: the harness is imported when `bench` runs
    return parser


def cmd_mount(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil

    from s3pvefs.config.file import load_config
    from s3pvefs.config.settings import Config
    from s3pvefs.logsetup import setup_logging
    from s3pvefs.service import preflight

    try:
        config = load_config(args.config, overrides(args))
    except ConfigError as exc:
        report_error(str(exc))
        return EXIT_CONFIG
    try:
        setup_logging(config)
    except ConfigError as exc:
        report_error(str(exc))
        return EXIT_CONFIG
    to_file = config.log_file is not None
    try:
        mountpoint = preflight.check_mountpoint(args.mountpoint)
        preflight.check_fuse(allow_other=config.allow_other)
        preflight.check_local_paths(mountpoint, config.cache_dir, config.log_file)
    except ConfigError as exc:
        report_error(str(exc), to_file)
        return EXIT_CONFIG

    local = None
    demo_cache: Path | None = None
    try:
        if config.endpoint_url is None and config.bucket is None:
            from s3pvefs.service.embedded import demo_cache_dir, start_local_s3

            try:
                local = start_local_s3()
                if args.cache_dir is None and config.cache_dir == Config().cache_dir:
                    # Throw-away data stays out of the production cache (and its journal).
                    demo_cache = demo_cache_dir()
                    config = dataclasses.replace(config, cache_dir=demo_cache)
                    preflight.check_local_paths(mountpoint, config.cache_dir, config.log_file)
            except ConfigError as exc:
                report_error(str(exc), to_file)
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

        from s3pvefs.service.mount import run_mount

        return run_mount(config, mountpoint)
    except KeyboardInterrupt:
        report_error("interrupted", to_file)
        return 130
    finally:
        if local is not None:
            local.stop()
        if demo_cache is not None:
            shutil.rmtree(demo_cache, ignore_errors=True)


def _where(config: Any) -> str:
    endpoint = config.endpoint_url or "AWS S3"
    return f"s3://{config.bucket}/{config.prefix} on {endpoint}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
