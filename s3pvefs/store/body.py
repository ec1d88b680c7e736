"""Request bodies sent from a local file a chunk at a time: a part of a backup goes from the
cache file to the socket without ever being whole in memory, whatever the part size.

A ``FileSlice`` names bytes of a file. ``hash()`` reads them once, in a worker thread, for the
two digests an upload needs before and after it: the MD5 its Content-MD5 header carries (the
header leads the body, so it cannot be computed on the way) and the CRC64NVME the whole-file
checksum is combined from. The ``SliceBody`` it returns is what ``upload_part`` sends: aiohttp
reads it again, chunk by chunk, as the socket takes it (httpbody.py), and from its start when
botocore retries. Should the file change between the two reads, the server refuses the body (its MD5 is
not the header's) or answers an ETag that is not that MD5, and the upload is tried again with
fresh digests: what S3 accepted is always what was hashed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from awscrt import checksums as crt

if TYPE_CHECKING:
    from s3pvefs.store.throttle import RateLimit

CHUNK = 1024 * 1024  # read from the file and handed to the socket at a time


@dataclass(frozen=True)
class FileSlice:
    """Bytes [offset, offset+length) of a local file; zeros past its end (a sparse cache file
    holds zeros there)."""

    path: Path
    offset: int
    length: int

    async def hash(self) -> SliceBody:
        """The slice with its digests, read in one pass in a worker thread."""
        return await trio.to_thread.run_sync(self._hash)

    def _hash(self) -> SliceBody:
        md5 = hashlib.md5(usedforsecurity=False)
        crc = 0
        with self.open() as reader:
            while chunk := reader.read(CHUNK):
                md5.update(chunk)
                crc = crt.crc64nvme(chunk, crc)
        return SliceBody(self, md5.digest(), crc)

    def open(self, throttle: RateLimit | None = None) -> SliceReader:
        return SliceReader(self, throttle)

    def read_all(self) -> bytes:
        """The whole slice in memory: for the in-memory test store only."""
        with self.open() as reader:
            return reader.read(self.length)


@dataclass(frozen=True)
class SliceBody:
    """A slice with the digests of its bytes as they were read."""

    slice: FileSlice
    md5: bytes
    crc64nvme: int  # the raw value, to combine with the other parts' (checksums.Crc64Nvme)

    def __len__(self) -> int:
        return self.slice.length


class SliceReader:
    """A seekable reader of a slice, as botocore wants a body (it measures it, and seeks to
    its start before a retry). Its descriptor is its own, closed by ``close`` once no read
    runs: an executor thread may still be reading after the request was cancelled."""

    def __init__(self, file_slice: FileSlice, throttle: RateLimit | None):
        self.slice = file_slice
        self.throttle = throttle
        self._position = 0
        self._fd: int | None = os.open(file_slice.path, os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.slice.length

    def __enter__(self) -> SliceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self._fd is None:
                raise ValueError("read of a closed slice")
            left = self.slice.length - self._position
            wanted = left if size < 0 else min(size, left)
            data = os.pread(self._fd, wanted, self.slice.offset + self._position)
            if len(data) < wanted:  # past the end of the file: zeros
                data += bytes(wanted - len(data))
            self._position += wanted
            return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.slice.length}
        self._position = max(0, min(self.slice.length, base[whence] + position))
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
