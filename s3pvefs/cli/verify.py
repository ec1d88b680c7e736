"""`s3pvefs verify [PATH...]`: read stored files back and compare them with the checksum
recorded at upload (``service/verify.py`` does the work). Runs without a mount, with the
mount's settings (--config FILE and/or flags), and never changes an object.

Exit status: 0 every object checked is intact (objects without a recorded checksum are
counted, and named on stderr, but are no failure); 1 a mismatch, a missing PATH, an object
replaced while it was read, or an S3 request that failed; 2 invalid arguments or
configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from s3pvefs.cli.admin import admin_config, run_reporting
from s3pvefs.cli.settings import add_config_arguments, report_error

EXIT_DAMAGED = 1


def add_parser(sub: Any) -> None:
    verify = sub.add_parser(
        "verify",
        help="read stored files back and compare them with their recorded checksums",
        description=(
            "Check every object under PATH (relative to the prefix; default: all of it) "
            "against the CRC64NVME recorded when s3pvefs uploaded it (the object's metadata "
            "x-amz-meta-s3pvefs-crc64nvme, or the directory's attribute index for files "
            "uploaded in parts): against the one S3 keeps where it keeps one, otherwise by "
            "streaming the object back. Needs no mount and changes nothing. Objects without a "
            "recorded checksum are reported as unrecorded. Exit status: 0 all intact; 1 a "
            "mismatch, a missing PATH, an object replaced while it was read, or an S3 error; "
            "2 configuration error."
        ),
    )
    add_config_arguments(verify)
    verify.add_argument("paths", metavar="PATH", nargs="*",
                        help="a file or directory under the prefix, e.g. dump or "
                             "dump/vzdump-qemu-100-2026_12_01-01_00_00.vma.zst")
    verify.add_argument("--download", action="store_true",
                        help="read every object back, also where S3 reports a checksum; "
                             "objects without a recorded one are then checked against their "
                             "ETag where it is an MD5")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from s3pvefs.service import verify

    config = admin_config(args)
    if isinstance(config, int):
        return config
    bar = _ProgressBar()
    try:
        report = run_reporting(config, _verify, config.prefix, args, bar)
    except KeyboardInterrupt:
        report_error("interrupted")
        return 130
    finally:
        bar.close()
    if isinstance(report, int):
        return report
    print(report.as_json() if args.json else format_report(report), end="", flush=True)
    for verdict in report.verdicts:
        if verdict.status != verify.OK:
            print(f"s3pvefs: verify: {verdict.path}: {verdict.status}: {verdict.detail}",
                  file=sys.stderr)
    return EXIT_DAMAGED if report.failed else 0


async def _verify(store: Any, prefix: str, args: argparse.Namespace, bar: _ProgressBar) -> Any:
    from s3pvefs.service.verify import verify

    return await verify(store, prefix, args.paths, download=args.download,
                        on_total=bar.start, progress=bar.advance)


def format_report(report: Any) -> str:
    from s3pvefs.service.verify import VERDICTS

    summary = report.summary()
    lines = [f"s3pvefs verify: {summary['objects']} object(s), {summary['bytes']} bytes"]
    lines += [f"  {status:<11} {summary[status]}" for status in VERDICTS]
    return "\n".join(lines) + "\n"


class _ProgressBar:
    """Bytes read so far, as a bar on stderr when it is a terminal (tqdm); nothing otherwise."""

    def __init__(self) -> None:
        self._bar = None

    def start(self, total: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                             desc="verify", file=sys.stderr)

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
