"""Crash journal: what a restarted mount needs to finish uploading acknowledged data.

One JSON record per file whose data is not (all) on S3 yet, in ``<cache>/journal/<id>.json``,
next to its cache file ``<cache>/data/<id>``. A record says where the file belongs (its key and
attributes), which blocks of the cache file hold data S3 does not have, which remote object the
clean blocks come from, and the parts of its streaming multipart upload already on S3.
Before a request replaces the object at the file's key, the record announces the object it will
make (``landing``: key, the ETag S3 will give it, size): a crash before the answer is journaled
leaves a base S3 no longer has, and the next mount takes that object, and only that one, for it.

Records are replaced atomically (write a temporary file, rename it over the old one). At the
durability points (close, fsync, a streamed part about to leave the cache, rename) the cache
file and the record are fsynced before the operation returns. A record is removed once the
file is entirely on S3, or when the file is deleted.

Multipart uploads that were started for whole-file uploads or copies are listed in
``<cache>/journal/uploads/`` while they run, so that the next mount can abort the ones a crash
orphaned, and only those: other hosts' uploads under the same prefix are left alone.

Objects that keep the data of files deleted while still open are listed in
``<cache>/journal/deletes/`` from before they are made until they are deleted (at the last
close, or at unmount): after a crash the next mount deletes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from s3pvefs.store.objectstore import RemoteObject

log = logging.getLogger(__name__)

VERSION = 1  # of the file records; written by every mount since the journal exists


@dataclass(frozen=True)
class StreamRecord:
    """A streaming multipart upload as journaled: its parts on S3 survive a crash."""

    key: str
    upload_id: str
    predicted: bool  # key is the name the file was expected to be renamed to
    origin_name: str
    meta_current: bool  # the upload's metadata carries the file's current attributes
    parts: tuple[tuple[int, int, int, str], ...]  # (number, offset, length, ETag) on S3
    launched: tuple[tuple[int, int, int], ...]  # (number, offset, length), on S3 or not

    def to_json(self) -> dict:
        return {"key": self.key, "upload_id": self.upload_id, "predicted": self.predicted,
                "origin_name": self.origin_name, "meta_current": self.meta_current,
                "parts": [list(part) for part in self.parts],
                "launched": [list(part) for part in self.launched]}

    @classmethod
    def from_json(cls, record: dict) -> StreamRecord:
        return cls(record["key"], record["upload_id"], record["predicted"],
                   record["origin_name"], record["meta_current"],
                   tuple((n, o, length, e) for n, o, length, e in record["parts"]),
                   tuple((n, o, length) for n, o, length in record["launched"]))


@dataclass(frozen=True)
class JournalRecord:
    """What a restarted mount needs to finish one file's upload (see the module docstring).

    Block sets are kept as [start, end) runs, as in the JSON: a checkpoint per streamed part
    must not expand a large file's blocks one by one.
    """

    file_id: str  # of the cache file, which holds the data
    key: str
    writing: bool  # a writer still had it open: writes after the record are in the cache file
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    base: RemoteObject | None
    landing: RemoteObject | None  # announced before the request that replaces ``base``
    base_valid_len: int
    cached_runs: tuple[tuple[int, int], ...]
    dirty_runs: tuple[tuple[int, int], ...]
    seq: int  # the newer of two records for one key wins
    stale_keys: tuple[str, ...]
    data_dirty: bool
    meta_dirty: bool
    stream: StreamRecord | None

    @property
    def cached(self) -> set[int]:
        return expand_runs(self.cached_runs)

    @property
    def dirty(self) -> set[int]:
        return expand_runs(self.dirty_runs)

    def to_json(self) -> dict:
        return {
            "version": VERSION, "id": self.file_id, "key": self.key,
            "state": "open" if self.writing else "closed",
            "size": self.size, "mode": self.mode, "uid": self.uid, "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "base": _object_json(self.base), "landing": _object_json(self.landing),
            "base_valid_len": self.base_valid_len,
            "cached": [list(run) for run in self.cached_runs],
            "dirty": [list(run) for run in self.dirty_runs],
            "seq": self.seq, "stale_keys": list(self.stale_keys),
            "data_dirty": self.data_dirty, "meta_dirty": self.meta_dirty,
            "stream": None if self.stream is None else self.stream.to_json(),
        }

    @classmethod
    def from_json(cls, record: dict) -> JournalRecord:
        """Raises ValueError for a record this version cannot read."""
        if not isinstance(record, dict) or record.get("version") != VERSION:
            version = record.get("version") if isinstance(record, dict) else None
            raise ValueError(f"unknown version {version!r}")
        try:
            return cls._from_version_1(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed record ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_version_1(cls, record: dict) -> JournalRecord:
        # Records written before "stale_keys" hold one "stale_key" (or none).
        stale_keys = record.get("stale_keys") or list(filter(None, [record.get("stale_key")]))
        stream = record.get("stream")
        return cls(
            file_id=record["id"], key=record["key"], writing=record["state"] == "open",
            size=record["size"], mode=record["mode"], uid=record["uid"], gid=record["gid"],
            mtime_ns=record["mtime_ns"],
            base=_object_from_json(record["base"]),
            landing=_object_from_json(record.get("landing")),
            base_valid_len=record["base_valid_len"],
            cached_runs=tuple((start, end) for start, end in record["cached"]),
            dirty_runs=tuple((start, end) for start, end in record["dirty"]),
            seq=record.get("seq", 0), stale_keys=tuple(stale_keys),
            data_dirty=record["data_dirty"], meta_dirty=record["meta_dirty"],
            stream=None if not stream else StreamRecord.from_json(stream),
        )


def _object_json(remote: RemoteObject | None) -> dict | None:
    return None if remote is None else {"key": remote.key, "etag": remote.etag,
                                        "size": remote.size}


def _object_from_json(record: dict | None) -> RemoteObject | None:
    return None if not record else RemoteObject(record["key"], record["etag"], record["size"])


class Journal:
    def __init__(self, cache_dir: Path):
        self.dir = cache_dir / "journal"
        self.uploads_dir = self.dir / "uploads"
        self.deletes_dir = self.dir / "deletes"

    def open(self) -> None:
        self.uploads_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.deletes_dir.mkdir(exist_ok=True, mode=0o700)
        for leftover in self.dir.glob("*.tmp"):
            leftover.unlink()

    # -- file records (called in worker threads) --------------------------------------------

    def write(self, record: JournalRecord, durable: bool) -> None:
        """Replace a file's record (its cache file was fsynced first when ``durable``)."""
        self._replace(self.dir / f"{record.file_id}.json", record.to_json(), durable)

    def remove(self, file_id: str) -> None:
        try:
            (self.dir / f"{file_id}.json").unlink()
        except FileNotFoundError:
            pass

    def records(self) -> tuple[list[JournalRecord], list[str]]:
        """The readable records, and the file ids of unreadable ones (whose cache files must
        be kept for the admin)."""
        found, unreadable = [], []
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = JournalRecord.from_json(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log.error("journal record %s cannot be read (%s); it and its cache file are "
                          "left in place", path, exc)
                unreadable.append(path.stem)
                continue
            found.append(record)
        return found, unreadable

    # -- multipart uploads in flight ---------------------------------------------------------

    def upload_intended(self, key: str) -> str:
        """Note, durably, that a multipart upload of ``key`` is about to be created: a crash
        before its ID is listed must not leave an upload nobody aborts. Returns a token for
        ``upload_started``."""
        token = uuid.uuid4().hex
        self._replace(self.uploads_dir / f"intent-{token}.json",
                      {"key": key, "intent": token, "since_ns": time.time_ns()}, True)
        return token

    def upload_started(self, key: str, upload_id: str, intent: str | None = None) -> None:
        self._replace(self._upload_path(upload_id), {"key": key, "upload_id": upload_id}, False)
        if intent is not None:
            self.intent_done(intent)

    def intent_done(self, intent: str) -> None:
        (self.uploads_dir / f"intent-{intent}.json").unlink(missing_ok=True)

    def upload_ended(self, upload_id: str) -> None:
        try:
            self._upload_path(upload_id).unlink()
        except FileNotFoundError:
            pass

    def uploads(self) -> list[dict]:
        """Uploads listed ({key, upload_id}) and intents left by a crash ({key, intent,
        since_ns}: an upload of key may have been created then)."""
        found = []
        for path in self.uploads_dir.glob("*.json"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        return found

    def _upload_path(self, upload_id: str) -> Path:
        return self.uploads_dir / (hashlib.sha256(upload_id.encode()).hexdigest()[:32] + ".json")

    # -- objects to delete once their deleted file's last handle is gone ----------------------

    def delete_pending(self, key: str) -> None:
        """Note, durably, that ``key`` must be deleted (a crash must not leave it forever)."""
        self._replace(self._delete_path(key), {"key": key}, True)

    def delete_done(self, key: str) -> None:
        self._delete_path(key).unlink(missing_ok=True)

    def pending_deletes(self) -> list[str]:
        keys = []
        for path in self.deletes_dir.glob("*.json"):
            try:
                keys.append(json.loads(path.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError):
                log.error("journal record %s cannot be read; left in place", path)
        return keys

    def _delete_path(self, key: str) -> Path:
        return self.deletes_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    # -- atomic replacement -------------------------------------------------------------------

    def _replace(self, path: Path, content: dict, durable: bool) -> None:
        temporary = path.with_suffix(".tmp")
        with open(temporary, "w") as out:
            json.dump(content, out, separators=(",", ":"))
            out.flush()
            # Always: a rename over a durable record must never leave an empty file after a
            # power loss. ``durable`` adds the directory, so that the new name itself sticks.
            os.fsync(out.fileno())
        os.replace(temporary, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


def block_runs(blocks) -> list[list[int]]:
    """Block numbers -> sorted [start, end) runs (compact in JSON)."""
    runs: list[list[int]] = []
    for block in sorted(blocks):
        if runs and runs[-1][1] == block:
            runs[-1][1] = block + 1
        else:
            runs.append([block, block + 1])
    return runs


def expand_runs(runs) -> set[int]:
    return {block for start, end in runs for block in range(start, end)}
