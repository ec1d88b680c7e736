"""The mount's settings on the command line: ``--config FILE`` and one flag per setting, shared
by `mount`, `check`, `info` and `lifecycle`, and the overrides they give ``load_config``;
secrets given as flags are refused. Also how those commands report an error (``report_error``:
into the log file too when the settings name one) and exit on a configuration error
(``EXIT_CONFIG``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from s3pvefs.errors import print_error

log = logging.getLogger("s3pvefs.cli.main")

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
    ("--max-request-rate", "max_request_rate", "N", "S3 requests per second at most (default 0: no cap)"),
    ("--upload-bwlimit", "upload_bwlimit", "RATE", "upload bandwidth limit: a rate (20MiB), off, or a timetable (\"08:00,20MiB 19:00,off\")"),
    ("--download-bwlimit", "download_bwlimit", "RATE", "download bandwidth limit, as --upload-bwlimit"),
    # New objects
    ("--storage-class", "storage_class", "CLASS", "storage class of new objects, e.g. STANDARD_IA (default: the server's)"),
    ("--storage-class-by-dir", "storage_class_by_dir", "DIR=CLASS,...", "storage class per content directory, e.g. dump=STANDARD_IA,template=STANDARD"),
    ("--sse", "sse", "MODE", "server-side encryption: none, AES256, aws:kms or SSE-C (default none)"),
    ("--retention-by-dir", "retention_by_dir", "DIR=DURATION,...", "S3 Object Lock retention of new objects per content directory, e.g. dump=30d (the bucket needs Object Lock)"),
    ("--retention-mode", "retention_mode", "MODE", "governance or compliance (default governance)"),
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
    ("--metrics-listen", "metrics_listen", "HOST:PORT", "serve Prometheus metrics at http://HOST:PORT/metrics (a port alone: on 127.0.0.1; default off)"),
]

_BOOL_FLAGS: list[tuple[str, str, str]] = [
    ("--create-bucket", "create_bucket", "create the bucket if it does not exist"),
    ("--verify-tls", "verify_tls", "verify the endpoint's TLS certificate (default yes)"),
    ("--allow-other", "allow_other", "let users other than root access the mount"),
]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
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


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [dest for _f, dest, _m, _h in _VALUE_FLAGS] + [dest for _f, dest, _h in _BOOL_FLAGS]
    return {name: getattr(args, name) for name in names}


def report_error(message: str, log_file_active: bool = False) -> None:
    """The `s3pvefs: error:` line; into the log too when the settings send it to a file."""
    print_error(message, log if log_file_active else None)
