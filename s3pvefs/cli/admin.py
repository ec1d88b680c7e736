"""`s3pvefs check`, `info` and `lifecycle`: their flags, and the commands, which talk to the bucket
directly with the mount's settings (``admin.py`` does the work). Exit status: 0 all is well, 1
a check or an S3 request failed, 2 invalid arguments or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from s3pvefs.cli.settings import (
    EXIT_CONFIG,
    add_config_arguments,
    overrides,
    report_error,
)
from s3pvefs.errors import ConfigError

log = logging.getLogger("s3pvefs.cli.main")

EXIT_CHECK_FAILED = 1
EXIT_S3_ERROR = 1
DEFAULT_ABORT_DAYS = 7  # the same as admin.DEFAULT_ABORT_DAYS (not imported: keeps --help fast)


def add_parsers(sub: Any) -> None:
    """The subcommands that talk to the bucket (called from cli.build_parser)."""
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
    add_config_arguments(check)
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
    add_config_arguments(info)
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    info.set_defaults(handler=cmd_info)

    lifecycle = sub.add_parser(
        "lifecycle",
        help="write the bucket lifecycle rule for the prefix (transitions, abort uploads)",
        description=(
            "Write one lifecycle rule (ID s3pvefs-PREFIX) scoped to the prefix: objects move "
            "to STANDARD_IA after --transition-days, to GLACIER after --glacier-days, and "
            "incomplete multipart uploads are aborted after --abort-incomplete-days (default "
            f"{DEFAULT_ABORT_DAYS}), and with --noncurrent-days versions that are no longer "
            "current expire. The bucket's other rules are kept. Prints the resulting "
            "configuration. Objects in GLACIER cannot be read through the mount before they "
            "are restored. Exit status: 0; 1 S3 error; 2 invalid arguments or configuration."
        ),
    )
    add_config_arguments(lifecycle)
    lifecycle.add_argument("--transition-days", metavar="N", type=_days, default=None,
                           help="move objects to STANDARD_IA after N days (at least 30)")
    lifecycle.add_argument("--glacier-days", metavar="M", type=_days, default=None,
                           help="move objects to GLACIER after M days (at least N + 30)")
    lifecycle.add_argument("--abort-incomplete-days", metavar="K", type=_days,
                           default=DEFAULT_ABORT_DAYS,
                           help=f"abort multipart uploads K days after they started "
                                f"(default {DEFAULT_ABORT_DAYS})")
    lifecycle.add_argument("--noncurrent-days", metavar="D", type=_days, default=None,
                           help="on a versioned bucket, delete versions D days after they "
                                "stopped being current (deleted or replaced files; locked "
                                "versions not before their retain-until date)")
    lifecycle.add_argument("--remove", action="store_true",
                           help="remove s3pvefs's rule for the prefix instead")
    lifecycle.add_argument("--dry-run", action="store_true",
                           help="print the resulting configuration without writing it")
    lifecycle.set_defaults(handler=cmd_lifecycle)


def _days(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None


def admin_config(args: argparse.Namespace) -> Any:
    """The validated configuration of check/info/lifecycle/verify with logging set up; or an exit
    status after printing why there is none."""
    from s3pvefs.config.file import load_config
    from s3pvefs.logsetup import setup_logging

    try:
        config = load_config(args.config, overrides(args))
        setup_logging(config)
    except ConfigError as exc:
        report_error(str(exc))
        return EXIT_CONFIG
    if not config.bucket:
        report_error("no bucket configured: give --bucket NAME (and --endpoint-url URL unless "
                     "it is AWS) or --config FILE")
        return EXIT_CONFIG
    log.debug("configuration: %s", config.redacted())
    if config.log_level != "DEBUG":
        # These commands report failed requests themselves; the store's warnings would say
        # everything twice.
        logging.getLogger("s3pvefs.store.s3store").setLevel(logging.ERROR)
    return config


def run_with_store(config: Any, work: Any, *args: Any) -> Any:
    """Run `work(store, *args)` on a store opened from `config` in a fresh trio run."""
    import trio

    from s3pvefs.store.s3store import open_s3_store

    async def main() -> Any:
        async with open_s3_store(config) as store:
            return await work(store, *args)

    return trio.run(main)


def run_reporting(config: Any, work: Any, *args: Any) -> Any:
    """`run_with_store`, or, after printing why it failed, the exit status: EXIT_CONFIG for a
    configuration error, EXIT_S3_ERROR for any other failure of ours (an S3 request, ...)."""
    from s3pvefs.errors import S3PveFsError

    try:
        return run_with_store(config, work, *args)
    except ConfigError as exc:
        report_error(str(exc), config.log_file is not None)
        return EXIT_CONFIG
    except S3PveFsError as exc:
        report_error(str(exc), config.log_file is not None)
        return EXIT_S3_ERROR


def cmd_check(args: argparse.Namespace) -> int:
    from s3pvefs.service import admin

    config = admin_config(args)
    if isinstance(config, int):
        return config
    try:
        results = run_with_store(config, admin.run_checks, config)
    except ConfigError as exc:
        report_error(str(exc), config.log_file is not None)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        report_error("interrupted")
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
    from s3pvefs.service import admin

    config = admin_config(args)
    if isinstance(config, int):
        return config
    usage = run_reporting(config, admin.collect_usage, config.prefix)
    if isinstance(usage, int):
        return usage
    if args.json:
        print(admin.usage_as_json(config, usage), end="")
    else:
        print(admin.format_usage(config, usage), end="")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from s3pvefs.service import admin

    plan = admin.LifecyclePlan(args.transition_days, args.glacier_days,
                               args.abort_incomplete_days, args.remove, args.noncurrent_days)
    try:
        plan.validate()
    except ConfigError as exc:
        report_error(str(exc))
        return EXIT_CONFIG
    config = admin_config(args)
    if isinstance(config, int):
        return config
    result = run_reporting(config, admin.apply_lifecycle, config.prefix, plan, args.dry_run)
    if isinstance(result, int):
        return result
    if args.dry_run:
        print("s3pvefs: dry run: the bucket's lifecycle configuration would become:",
              file=sys.stderr)
    print(admin.lifecycle_as_json(result), end="")
    if plan.glacier_days is not None and not plan.remove:
        print("s3pvefs: note: objects moved to GLACIER cannot be read through the mount "
              "before they are restored", file=sys.stderr)
    return 0
