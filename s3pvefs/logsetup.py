"""Logging for the mount process: stderr (journald under systemd) or a log file.

Records carry the level and the logger name. Secrets are replaced by "***" in every formatted
record, whichever library logged them, so credentials never reach a log, in two ways:

- where a secret is printed: the value after a secret's name (``secret_access_key = ...``,
  ``'SessionToken': '...'``, ``token='...'``, ``AWS_SECRET_ACCESS_KEY=...``, ``--session-token
  ...``) and the request headers that carry one (``Authorization``, ``x-amz-security-token``,
  the SSE-C key headers), whatever its value;
- anywhere, the known secrets long enough not to occur by chance: those of the configuration,
  of the environment (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), and those the AWS credential
  chain resolved (the store adds them with `add_secret`).

A short secret (a test key "test", MinIO's "minioadmin") is masked only where it is printed as
a secret: replacing every occurrence of "test" would turn "pjdfstest" into "pjdfs***".
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from s3pvefs.config.settings import Config
from s3pvefs.errors import ConfigError

# Libraries that log every request (botocore logs whole request bodies at DEBUG).
_NOISY = ("botocore", "aiobotocore", "urllib3", "aiohttp", "s3transfer", "boto3")

_installed: list[logging.Handler] = []

# Environment variables of the AWS credential chain whose values are secret.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# Secrets at least this long are masked wherever they appear: an AWS or Ceph secret key has 40
# characters, a session token hundreds, an SSE-C key 44 (base64); no log line holds one by
# chance. Shorter ones are masked only where they are printed as secrets (_SECRET_FIELD).
UNAMBIGUOUS_SECRET_LEN = 16
MASK = "***"

# Names whose value is a secret, as configuration keys, environment variables, botocore
# parameters, credential reprs (ReadOnlyCredentials(..., secret_key=, token=)), JSON of a
# credential_process or STS answer, and HTTP headers. "-" and "_" between words are alike.
_SEP = r"[-_]?"
_SECRET_NAMES = "|".join([
    rf"(?:aws{_SEP})?secret{_SEP}(?:access{_SEP})?key",
    rf"(?:aws{_SEP}|x-amz-)?(?:session|security){_SEP}token",
    r"token",
    rf"(?:copy{_SEP}source{_SEP})?sse{_SEP}customer{_SEP}key",
    r"x-amz-(?:copy-source-)?server-side-encryption-customer-key",
    r"authorization",
])
# The name (not the end of a longer word), an optional closing quote, ":" or "=" (or a space
# after a --flag), then the value: quoted (up to the same quote, b'' included) or bare.
_SECRET_FIELD = re.compile(
    rf"""(?<![A-Za-z0-9_])(?P<flag>--)?(?P<name>{_SECRET_NAMES})(?![A-Za-z0-9_-])
        (?P<sep>['"]?[ \t]*[:=][ \t]*|(?(flag)[ \t]+|(?!)))
        (?:(?P<prefix>b?)(?P<quote>['"])(?P<quoted>.*?)(?P=quote)
          |(?P<bare>[^\s'",;)}}\]]+))""",
    re.IGNORECASE | re.VERBOSE,
)
# An HTTP header line "Authorization: AWS4-HMAC-SHA256 Credential=..., Signature=...": all of it.
_AUTHORIZATION_LINE = re.compile(r"(?im)^(?P<head>[ \t]*authorization[ \t]*:[ \t]*)\S.*$")


def _mask_field(match: re.Match) -> str:
    start = match.group("flag") or ""
    head = start + match.group("name") + match.group("sep")
    if match.group("quote") is not None:
        quote = match.group("quote")
        return f"{head}{match.group('prefix')}{quote}{MASK}{quote}"
    return head + MASK


def mask_secrets(text: str, secrets: list[str] = ()) -> str:
    """``text`` with every secret printed as one, and every long known secret, masked."""
    text = _AUTHORIZATION_LINE.sub(lambda m: m.group("head") + MASK, text)
    text = _SECRET_FIELD.sub(_mask_field, text)
    for secret in secrets:
        if len(secret) >= UNAMBIGUOUS_SECRET_LEN and secret in text:
            text = text.replace(secret, MASK)
    return text


class SecretMaskingFormatter(logging.Formatter):
    """A Formatter that masks secrets (see the module's docstring) in the final text."""

    def __init__(self, fmt: str, secrets: list[str], datefmt: str | None = None):
        super().__init__(fmt, datefmt)
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: list[str]) -> None:
        # Longest first so that a secret containing another is masked whole. Short ones are
        # left to the field masking: found everywhere, they would hide ordinary words.
        known = set(self._secrets) | {s for s in secrets
                                      if s and len(s) >= UNAMBIGUOUS_SECRET_LEN}
        self._secrets = sorted(known, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record), self._secrets)


def setup_logging(config: Config) -> logging.Handler:
    """Install the root handler for this process from config.log_level / config.log_file.

    Under systemd (JOURNAL_STREAM set) the timestamp is left out: journald adds its own.
    Raises ConfigError when the log file cannot be opened. Calling it again replaces the
    handler (the CLI calls it once; tests may call it several times).
    """
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()

    if config.log_file is not None:
        path = Path(config.log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot open log file {path}: {exc.strerror or exc}"
            ) from None
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM"):
            fmt = "%(levelname)s %(name)s: %(message)s"
        else:
            fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    secrets = config.secrets() + [os.environ.get(name, "") for name in SECRET_ENV_VARS]
    handler.setFormatter(SecretMaskingFormatter(fmt, secrets))
    root.addHandler(handler)
    _installed.append(handler)

    level = logging.getLevelName(config.log_level)
    root.setLevel(level)
    noisy_level = logging.INFO if level <= logging.DEBUG else logging.WARNING
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(level, noisy_level))
    logging.captureWarnings(True)
    return handler


def add_secret(secret: str) -> None:
    """Mask one more secret (e.g. credentials set after logging started)."""
    for handler in _installed:
        formatter = handler.formatter
        if isinstance(formatter, SecretMaskingFormatter):
            formatter.add([secret])
