"""Logging for the mount process: stderr (journald under systemd) or a log file.

Records carry the level and the logger name. Secret strings are replaced by "***" in every
formatted record, whichever library logged them, so credentials never reach a log: those of the
configuration, those of the environment (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), and those the
AWS credential chain resolved (the store adds them with `add_secret`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .config import Config
from .errors import ConfigError

# Libraries that log every request (botocore logs whole request bodies at DEBUG).
_NOISY = ("botocore", "aiobotocore", "urllib3", "aiohttp", "s3transfer", "boto3")

_installed: list[logging.Handler] = []

# Environment variables of the AWS credential chain whose values are secret.
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# Shorter strings are not masked: replacing every "ab" in the logs would hide more than a
# secret (real secret keys and tokens are 40 characters and more).
MIN_SECRET_LEN = 4


class SecretMaskingFormatter(logging.Formatter):
    """A Formatter that replaces each known secret by *** in the final text."""

    def __init__(self, fmt: str, secrets: list[str], datefmt: str | None = None):
        super().__init__(fmt, datefmt)
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: list[str]) -> None:
        # Longest first so that a secret containing another is masked whole.
        known = set(self._secrets) | {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        self._secrets = sorted(known, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


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
