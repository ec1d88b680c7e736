"""Loading a configuration: the TOML file (standard library ``tomllib``) merged with the
command-line flags (the ones that are not None win), every value converted (sizes such as
"16MiB", modes such as "0644") and the result validated.

Every problem is a ``ConfigError`` whose message names the setting the way the admin wrote it
("[cache] size in FILE" or "--cache-size"). A file holding a secret must be chmod 600.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from s3pvefs.config.check import validate_config
from s3pvefs.config.settings import (
    ANY_KEY,
    FIELD_CONVERTERS,
    TOML_LAYOUT,
    Config,
    flag_name,
)
from s3pvefs.errors import ConfigError


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_toml(path: Path) -> tuple[dict[str, Any], os.stat_result]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"config file {path} is a directory")
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8") from None
    try:
        return tomllib.loads(text), st
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _values_from_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Converted values and their labels from the TOML file; enforces the chmod 600 rule."""
    data, st = _read_toml(path)
    creds = data.get("credentials")
    if (
        isinstance(creds, dict)
        and ("secret_access_key" in creds or "session_token" in creds)
        and st.st_mode & 0o066
    ):
        raise ConfigError(
            f"config file {path} contains a secret key but is readable or writable by group or "
            f"others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    sections = list(TOML_LAYOUT)
    for section, table in data.items():
        known = ", ".join("[" + s + "]" for s in sections)
        if section not in TOML_LAYOUT:
            if isinstance(table, dict):
                raise ConfigError(
                    f"unknown section [{section}] in {path}{_suggest(section, sections)}; "
                    f"known sections: {known}"
                )
            raise ConfigError(
                f"unknown key {section!r} at the top of {path}: every setting belongs in a "
                f"section ({known})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{section!r} in {path} must be a section [{section}], not a value")
        layout = TOML_LAYOUT[section]
        gathered = {key: value for key, value in table.items() if key not in layout}
        if gathered and ANY_KEY in layout:
            fname, conv = layout[ANY_KEY]
            values[fname] = conv(gathered, f"[{section}] in {path}")
            labels[fname] = f"[{section}] in {path}"
            table = {key: value for key, value in table.items() if key in layout}
        for key, value in table.items():
            if key not in layout:
                raise ConfigError(
                    f"unknown key {key!r} in [{section}] of {path}{_suggest(key, list(layout))}; "
                    f"known keys: {', '.join(layout)}"
                )
            fname, conv = layout[key]
            label = f"[{section}] {key} in {path}"
            values[fname] = conv(value, label)
            labels[fname] = label
    return values, labels


def load_config(config_file: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Build a validated Config from an optional TOML file and flag values (flags win).

    `overrides` maps Config field names to values; None means "not given". Values may be the
    final type or strings as typed on the command line ("16MiB", "0644", "30").
    """
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if config_file is not None:
        values, labels = _values_from_toml(Path(config_file))
    valid_fields = {f.name for f in dataclasses.fields(Config)}
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in valid_fields:
            raise ConfigError(f"unknown setting {name!r}")
        label = flag_name(name)
        conv = FIELD_CONVERTERS.get(name)
        values[name] = conv(value, label) if conv else value
        labels[name] = label
    config = Config(**values)
    validate_config(config, labels)
    return config
