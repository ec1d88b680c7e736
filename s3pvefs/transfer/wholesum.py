"""The checksum of a whole file (checksums.py: CRC64NVME), combined from the checksums of the
parts an upload sends.

Each part's CRC is taken in the pass that hashes its body before it is sent (store/body.py);
parts finish in any order, and CRCs combine, so a part that arrives before the ones below it
waits here as two numbers until they are in. Nothing is read a second time: the checksum exists
only when every byte of the object went through this upload once. A part sent again
(rewritten behind a stream), a part copied on the server, a restart in the middle: the upload
goes on and simply records no checksum (``s3pvefs verify`` then says so).
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.checksums import Crc64Nvme, crc64nvme_raw

log = logging.getLogger(__name__)

THREAD_THRESHOLD = 1024 * 1024  # larger bodies are summed in a worker thread


async def crc_of(body: bytes) -> int:
    """The raw CRC64NVME of one body (to add to a ``WholeFileChecksum``)."""
    if len(body) < THREAD_THRESHOLD:
        return crc64nvme_raw(body)
    return await trio.to_thread.run_sync(crc64nvme_raw, body)


class WholeFileChecksum:
    def __init__(self) -> None:
        self._sum = Crc64Nvme()
        self.summed_to = 0  # every byte below this offset is in the checksum
        self._waiting: dict[int, tuple[int, int]] = {}  # offset -> (length, CRC), arrived early
        self.given_up: str | None = None

    def give_up(self, why: str) -> None:
        if self.given_up is None:
            log.debug("no whole-file checksum: %s", why)
            self.given_up = why
            self._waiting.clear()

    def add(self, offset: int, length: int, crc: int) -> None:
        """The CRC of the part [offset, offset+length) S3 accepted."""
        if self.given_up:
            return
        if offset < self.summed_to or offset in self._waiting:
            self.give_up(f"bytes at {offset} were sent twice")
            return
        self._waiting[offset] = (length, crc)
        while self.summed_to in self._waiting:
            length, crc = self._waiting.pop(self.summed_to)
            self._sum.combine(crc, length)
            self.summed_to += length

    def value(self, size: int) -> str | None:
        """The checksum when exactly the bytes [0, size) were added, each once; else None."""
        if self.given_up or self._waiting or self.summed_to != size:
            return None
        return self._sum.value()
