"""`s3pvefs versions PATH` and `s3pvefs undelete PATH [--version ID]` (``service/versions.py``
does the work).

PATH is a path on a running mount (the mount does it, and shows an undeleted file at once), or,
with --config FILE or --bucket, a path relative to the prefix (no mount needed). Exit status: 0
done; 1 nothing to list or undelete, or an S3 request failed; 2 invalid arguments or
configuration, or PATH is not on a mount.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from s3pvefs.cli.admin import EXIT_S3_ERROR, admin_config, run_reporting
from s3pvefs.cli.settings import EXIT_CONFIG, add_config_arguments, report_error

EXIT_FAILED = EXIT_S3_ERROR  # nothing to list or undelete, or an S3 request failed
ANSWER_TIMEOUT = 3600.0  # an undelete of a large version copies it on the server


def add_parsers(sub: Any) -> None:
    versions = sub.add_parser(
        "versions",
        help="list the versions S3 keeps of a file, or the deleted files of a directory",
        description=(
            "List the versions of the file at PATH (newest first; delete markers included), "
            "or, for a directory, the versions of every file in it that is deleted: what "
            "`s3pvefs undelete` can bring back. Needs a bucket with versioning (Object Lock "
            "turns it on). " + _PATH_HELP),
    )
    undelete = sub.add_parser(
        "undelete",
        help="bring a deleted file back under its name from a version S3 keeps",
        description=(
            "Make the newest version of the deleted file at PATH (or --version ID) its current "
            "version again, by a server-side copy: no right to delete versions is needed. "
            + _PATH_HELP),
    )
    for parser in (versions, undelete):
        add_config_arguments(parser)
        parser.add_argument("path", metavar="PATH",
                            help="a path on a mount, or relative to the prefix with --config "
                                 "or --bucket")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    undelete.add_argument("--version", metavar="ID", default=None,
                          help="the version to restore (default: the newest)")
    versions.set_defaults(handler=cmd_versions)
    undelete.set_defaults(handler=cmd_undelete)


_PATH_HELP = (
    "PATH is a path on a running s3pvefs mount, or, with --config FILE or --bucket NAME, a path "
    "relative to the prefix (no mount needed). Exit status: 0 done; 1 nothing to list or "
    "undelete, or an S3 error; 2 configuration error or PATH not on a mount.")


def cmd_versions(args: argparse.Namespace) -> int:
    answer = _run(args, "versions")
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    for entry in answer:
        what = "delete marker" if entry["delete_marker"] else f"{entry['size']} bytes"
        latest = "  (current)" if entry["latest"] else ""
        print(f"{entry['path']}  {entry['modified']}  {entry['version_id']}  {what}{latest}")
    return 0


def cmd_undelete(args: argparse.Namespace) -> int:
    answer = _run(args, "undelete")
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{answer['path']}: version {answer['version_id']} of {answer['modified']} "
              f"({answer['size']} bytes) is current again")
    return 0


def _run(args: argparse.Namespace, op: str) -> Any:
    """The answer of ``op`` (the mount's, or the bucket's directly); an exit status after
    printing why there is none."""
    if args.config is not None or args.bucket is not None:
        return _on_bucket(args, op)
    return _on_mount(args, op)


def _on_bucket(args: argparse.Namespace, op: str) -> Any:
    from s3pvefs.service import versions

    config = admin_config(args)
    if isinstance(config, int):
        return config
    if op == "versions":
        return run_reporting(config, versions.list_versions, config.prefix, args.path)
    return run_reporting(config, versions.undelete, config.prefix, args.path,
                         getattr(args, "version", None))


def _on_mount(args: argparse.Namespace, op: str) -> Any:
    from s3pvefs.cli.control import locate
    from s3pvefs.service.control import ControlError, request

    try:
        mountpoint, relative = locate(Path(args.path))
        answer = request(mountpoint, {"op": op, "path": relative,
                                      "version": getattr(args, "version", None)},
                         ANSWER_TIMEOUT)
    except ControlError as exc:
        report_error(f"{exc} (or give --config FILE / --bucket NAME and a path relative to "
                     "the prefix)")
        return EXIT_CONFIG
    if not answer.get("ok"):
        print(f"s3pvefs: error: {answer.get('error', 'unexpected answer')}", file=sys.stderr)
        return EXIT_FAILED
    return answer["versions"] if op == "versions" else answer["restored"]
