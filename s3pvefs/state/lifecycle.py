"""One file's lifecycle: where its data lives, what S3 has of it, what uploads it.

Every node carries a ``FileState`` (``node.file``; a directory's only ever uses the holds: a
rename holds the directories it moves). Its fields are written here only, by transitions
named after what happened; other modules read them and ask ``state``. Its journal record is
built from it in one place, filejournal.FileJournal.

Each transition is one step. Where the order between a step and the journal record is what a
crash depends on, the pair is one method of filejournal.FileJournal: ``announce_landing`` (an
upload's object is journaled durably before the request that makes it) and ``record_parts``
(a streamed part's blocks may leave the cache only once the record listing the part is on
disk). A completed stream backs the evicted blocks at once: ``stream_completed`` is one step
(no await between the completion and it). A key a file left is deleted only after the record
with its new key is durable (core's rename checkpoints before leftkeys.LeftKeys deletes).
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from s3pvefs.errors import FsError, StoreError
from s3pvefs.state.cachefile import CachedFile
from s3pvefs.state.journal import JournalRecord
from s3pvefs.store.objectstore import RemoteObject


class State(enum.Enum):
    """One word for where a file is in its lifecycle (``FileState.state``)."""

    UNLINKED = "unlinked"  # deleted: handles may still read and write; nothing uploads
    HELD = "held"  # a rename or unlink is changing where its object lives
    UPLOADING = "uploading"  # an upload (or stale-key cleanup) runs under its sync lock
    PENDING_RENAME = "pending rename"  # streamed to a name it has not been renamed to yet
    STREAMING = "streaming"  # a multipart upload takes its parts while it is written
    WRITING = "writing"  # open for writing
    DIRTY = "dirty"  # S3 does not have it as it is here: an upload is due
    CLEAN = "clean"  # on S3 as it is here; cached blocks may be evicted
    REMOTE = "remote"  # on S3, nothing cached here


@dataclass(frozen=True)
class ContentChecksum:
    """The checksum (checksums.py: CRC64NVME) of the content of a file's object, as this mount
    computed it on upload, and where it is recorded for ``s3pvefs verify``: the object's own
    metadata (a PUT: known before the request) or this host's attribute index of the directory
    (a multipart upload: known only at its end)."""

    value: str
    in_metadata: bool


class FileState:
    """The lifecycle fields of one file (or symlink), and the transitions that change them."""

    __slots__ = (
        "_journal_lock",
        "_sync_lock",
        "base",
        "checksum",
        "data",
        "data_gen",
        "data_version",
        "holds",
        "journal_id",
        "landing",
        "last_error",
        "meta_gen",
        "remote_maybe",
        "stale_keys",
        "stream",
        "sync_scope",
        "uploaded_data_gen",
        "uploaded_meta_gen",
        "waiting_for_rename",
    )

    def __init__(self) -> None:
        self.base: RemoteObject | None = None
        self.checksum: ContentChecksum | None = None  # of the base's content, when known
        # The object an upload announced (by the ETag S3 will give it) before the request that
        # replaces the one at ``base``: journaled, so that a restart can tell whether it landed.
        self.landing: RemoteObject | None = None
        self.data: CachedFile | None = None
        # Changes that only a new upload publishes: data_gen for creation and truncation,
        # meta_gen for attributes; compared with what the last successful upload carried.
        self.data_gen = 0
        self.meta_gen = 0
        self.uploaded_data_gen = 0
        self.uploaded_meta_gen = 0
        self.remote_maybe = False  # an object may exist at this node's key
        # Keys we left where an object of ours may still be: each is deleted once (a later
        # rename adds another before the first is gone), unless another file is there now.
        self.stale_keys: set[str] = set()
        self.stream = None  # streaming.Stream while parts upload during writing
        self.waiting_for_rename: str | None = None  # see errors.RenamePending
        self.holds = 0  # renames/unlinks waiting to change this node (uploads step aside)
        self._sync_lock: trio.Lock | None = None  # locks made when first needed
        self.sync_scope: trio.CancelScope | None = None
        self.last_error: str | None = None
        self._journal_lock: trio.Lock | None = None
        self.journal_id: str | None = None  # the cache file id its journal record is under
        self.data_version = 0  # bumped when the remote content changed under us

    @property
    def sync_lock(self) -> trio.Lock:
        if self._sync_lock is None:
            self._sync_lock = trio.Lock()
        return self._sync_lock

    @property
    def journal_lock(self) -> trio.Lock:
        if self._journal_lock is None:
            self._journal_lock = trio.Lock()
        return self._journal_lock

    # -- questions -----------------------------------------------------------------------------

    @property
    def data_dirty(self) -> bool:
        """Not on S3 as it is here. An unfinished streaming upload counts: its parts made
        their blocks clean, but S3 shows no object of them until the upload completes."""
        dirty_blocks = self.data is not None and bool(self.data.dirty)
        return (dirty_blocks or self.data_gen != self.uploaded_data_gen
                or self.stream is not None)

    @property
    def meta_dirty(self) -> bool:
        return self.meta_gen != self.uploaded_meta_gen

    @property
    def changed(self) -> bool:
        """Data or attributes that only an upload publishes."""
        return self.data_dirty or self.meta_dirty

    @property
    def syncing(self) -> bool:
        """An upload (or a rename or unlink holding uploads off) is working on this node."""
        return self._sync_lock is not None and self._sync_lock.locked()

    def state(self, *, writing: bool, unlinked: bool) -> State:
        """The first of the states that applies, in the order of ``State``."""
        if unlinked:
            return State.UNLINKED
        if self.holds:
            return State.HELD
        if self.syncing:
            return State.UPLOADING
        if self.waiting_for_rename is not None:
            return State.PENDING_RENAME
        if self.stream is not None:
            return State.STREAMING
        if writing:
            return State.WRITING
        if self.changed:
            return State.DIRTY
        return State.CLEAN if self.data is not None and self.data.cached else State.REMOTE

    # -- local changes -------------------------------------------------------------------------

    def data_changed(self) -> None:
        """Creation or truncation: the object must be uploaded again."""
        self.data_gen += 1

    def attributes_changed(self) -> None:
        """chmod, chown, utime: the object's metadata must be published again."""
        self.meta_gen += 1

    def cache_file_attached(self, data: CachedFile) -> None:
        """The file's blocks are cached in ``data`` from now on; the base backs the rest."""
        self.data = data
        data.reset_base(self.base.size if self.base is not None else 0)

    def discard_data(self) -> None:
        """The cache file goes (the file changed on S3, or is gone with its last handle)."""
        if self.data is not None:
            self.data.discard()
            self.data = None

    # -- what S3 holds -------------------------------------------------------------------------

    def upload_started(self) -> None:
        """From the first request of an upload on, an object may be at the file's key."""
        self.remote_maybe = True

    def remote_possible(self) -> None:
        """An object may be at the file's key (its own, or one another file left there)."""
        self.remote_maybe = True

    def landing_announced(self, landing: RemoteObject) -> None:
        """Journaled (durably, by the caller) before the request that makes that object."""
        self.landing = landing

    def landing_settled(self, landed: bool) -> None:
        """The announced upload's outcome is known: if it landed, its object is the base
        (clean blocks hold there what they held in the old base)."""
        if landed:
            self.base, self.checksum = self.landing, None
            if self.data is not None:
                self.data.reset_base(min(self.data.base_valid_len, self.landing.size))
        self.landing = None

    def uploaded(self, remote: RemoteObject, data_gen: int, meta_gen: int,
                 checksum: ContentChecksum | None = None) -> None:
        """An upload of generations (data_gen, meta_gen) made ``remote``: it is the base."""
        self.base, self.landing, self.checksum = remote, None, checksum
        self.uploaded_data_gen, self.uploaded_meta_gen = data_gen, meta_gen

    def backed_by(self, remote: RemoteObject, valid_len: int | None = None) -> None:
        """An object of ours backs the file from now on (a copy, a completion, a symlink);
        with ``valid_len``, the cached blocks below it are that object's bytes."""
        self.base, self.checksum = remote, None
        self.remote_maybe = True
        if valid_len is not None and self.data is not None:
            self.data.reset_base(valid_len)

    def checksum_learned(self, checksum: ContentChecksum) -> None:
        """The base's checksum, as recorded where this mount put it (its attribute index)."""
        self.checksum = checksum

    def copied_with_attributes(self, remote: RemoteObject) -> None:
        """A server-side copy carrying the current attributes backs the file at its new key
        (the same content: its checksum stays)."""
        self.base = remote
        self.uploaded_meta_gen = self.meta_gen

    def moved_aside(self, remote: RemoteObject) -> None:
        """Deleted while open: its data is read from a hidden copy until the last close."""
        self.base = remote

    def local_only(self) -> None:
        """Every byte is in the cache: no object backs the file any more."""
        self.base, self.checksum = None, None
        if self.data is not None:
            self.data.reset_base(0)

    def moved(self, object_at_new_key: bool) -> None:
        """Renamed: an object may be at the new key if one was copied there or replaced."""
        self.remote_maybe = object_at_new_key

    def remote_changed(self, remote: RemoteObject) -> None:
        """Another writer changed the object: cached data of the old one is dropped, and the
        kernel's page cache must not be kept at the next open."""
        self.base, self.checksum = remote, None
        self.data_version += 1
        self.discard_data()

    # -- keys left behind ----------------------------------------------------------------------

    def left_key(self, key: str) -> bool:
        """An object of ours may stay at ``key``, which the file no longer has; True if new."""
        if key in self.stale_keys:
            return False
        self.stale_keys.add(key)
        return True

    def forget_left_key(self, key: str) -> bool:
        """Deleted, or another file's now; True if it was left by this file."""
        if key not in self.stale_keys:
            return False
        self.stale_keys.discard(key)
        return True

    # -- streaming -----------------------------------------------------------------------------

    def stream_started(self, stream, first_part: int = 0) -> None:
        """Parts upload while the file is written (or, restored, wait for ``finish``). The
        blocks of its ``first_part`` bytes stay cached until the stream ends: a restart may
        need them to start the upload again."""
        self.stream = stream
        if first_part:
            self.data.pinned_blocks = len(self.data.blocks(0, first_part))

    def parts_on_record(self, end: int) -> None:
        """The journal lists the streamed parts up to ``end`` as on S3 (durably): their
        blocks may leave the cache now, and read EIO until the upload completes."""
        self.data.streamed_len = end

    def parts_lost(self, end: int) -> None:
        """The stream was dropped after parts up to ``end`` left the cache: they read EIO,
        never as the zeros of the cache file's holes."""
        if self.data is not None:
            self.data.streamed_len = end

    def stream_completed(self, stream, remote: RemoteObject, valid_len: int) -> None:
        """The multipart upload is an object now: it backs the evicted parts at once."""
        self.backed_by(remote, valid_len)
        self.stream_forgotten(stream)

    def stream_forgotten(self, stream) -> None:
        """Completed or dropped: no part of the cache waits for it any more."""
        if self.stream is stream:
            self.stream = None
        if self.data is not None:
            self.data.streamed_len = self.data.pinned_blocks = 0

    def rename_awaited(self, key: str) -> None:
        """Streamed to ``key``: its upload waits until the file is renamed there."""
        self.waiting_for_rename = key

    def rename_not_awaited(self) -> None:
        self.waiting_for_rename = None

    # -- uploads and holds ---------------------------------------------------------------------

    def hold(self) -> None:
        """A rename or unlink is about to change this file: uploads queued step aside."""
        self.holds += 1

    def release_hold(self) -> None:
        self.holds -= 1

    def cancel_upload(self) -> None:
        """A hold stops the upload in flight; it starts again once the change is done."""
        if self.sync_scope is not None:
            self.sync_scope.cancel()

    @contextmanager
    def upload_attempt(self, scope: trio.CancelScope):
        """An upload runs under ``scope`` (a hold cancels it); its outcome is the last error."""
        self.sync_scope = scope
        try:
            yield
            self.last_error = None
        except (FsError, StoreError) as exc:
            self.last_error = str(exc)
            raise
        finally:
            self.sync_scope = None

    def request_failed(self, exc: Exception) -> None:
        """A streamed request failed and is retried: `s3pvefs status` shows why."""
        self.last_error = str(exc)

    # -- the journal ---------------------------------------------------------------------------

    def journaled(self, file_id: str) -> None:
        """Its journal record is under ``file_id`` now."""
        self.journal_id = file_id

    def unjournaled(self) -> None:
        """Its journal record is gone: nothing a restart must finish."""
        self.journal_id = None

    def restored(self, record: JournalRecord, data: CachedFile) -> None:
        """Recovered from ``record`` after a crash: its cache file holds the data; what it
        had not uploaded counts as one change of data or attributes."""
        self.remote_maybe = True
        self.base, self.landing = record.base, record.landing
        self.data = data
        data.reset_base(record.base_valid_len)
        self.data_gen = 1 if record.data_dirty or record.writing else 0
        self.meta_gen = 1 if record.meta_dirty else 0
        self.journal_id = record.file_id
