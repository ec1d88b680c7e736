"""Where the bytes of an upload come from: a file's cache file, and its object on S3 for the
blocks the cache does not hold.

A part is sent from the cache file as a ``SliceBody`` (store/body.py): read as the socket takes
it, never whole in memory. Blocks only S3 has are fetched into the cache first (the reader's
GETs, bounded as every read's), so that a part of a large image re-uploaded after a few blocks
changed is sent the same way. Only where that cannot be done (no cache file, a fetch that did
not stay) is the part assembled in memory, as a small PUT's body always is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from s3pvefs.errors import StoreError, StoreKind
from s3pvefs.state.nodes import Node
from s3pvefs.store.body import SliceBody
from s3pvefs.transfer.reader import BlockReader
from s3pvefs.transfer.wholesum import crc_of

FETCH_ROUNDS = 3  # fetches of a part's missing blocks before it is assembled in memory
SLICE_ATTEMPTS = 3  # sends of a slice written to meanwhile before it is sent from memory

log = logging.getLogger(__name__)


class PartSource:
    def __init__(self, reader: BlockReader):
        self.reader = reader

    async def send(self, node: Node, offset: int, length: int,
                   request: Callable[[bytes | SliceBody, int], Awaitable[str]]) -> tuple[str, int]:
        """Send the bytes [offset, offset+length) of the file with ``request(body, crc)`` (a PUT
        or an UploadPart); its answer (the ETag) and the CRC64NVME of what S3 accepted.

        A slice written to while it was sent reaches S3 as neither version: the server refuses
        it (Content-MD5) or answers another ETag (UNVERIFIED). It is hashed and sent again;
        should the file keep changing under it, it is sent from a copy in memory. (The write
        made its blocks dirty: a later upload sends them anyway.)"""
        with _kept(node, offset, length):  # no eviction until the body is sent
            for _ in range(SLICE_ATTEMPTS):
                body, crc = await self._body(node, offset, length)
                try:
                    return await request(body, crc), crc
                except StoreError as exc:
                    if exc.kind is not StoreKind.UNVERIFIED or not isinstance(body, SliceBody):
                        raise
                    log.info("%s changed while bytes %d-%d were sent; sending them again",
                             node.path(), offset, offset + length)
            composed = await self.compose(node, offset, length)
            crc = await crc_of(composed)
            return await request(composed, crc), crc

    async def _body(self, node: Node, offset: int, length: int) -> tuple[bytes | SliceBody, int]:
        """The body of the part [offset, offset+length) and the CRC64NVME of its bytes (``send``
        keeps the range ``in_use`` until it is sent)."""
        data = node.file.data
        if data is not None and length:
            for _ in range(FETCH_ROUNDS):
                missing = data.missing_blocks(offset, length)
                if not missing:
                    body = await data.slice(offset, length).hash()
                    return body, body.crc64nvme
                await self.reader.obtain(data, node.file.base, missing, installed=True)
        composed = await self.compose(node, offset, length)
        return composed, await crc_of(composed)

    async def compose(self, node: Node, offset: int, length: int) -> bytes:
        """The file's bytes in [offset, offset+length) in memory: cached blocks, else the
        remote object."""
        data = node.file.data
        if data is None:
            return await self.reader.read_range(node.file.base, offset, length) if length else b""
        pieces = []
        with data.in_use(offset, length):  # cached blocks chosen below must stay until read
            for local, start, end in _segments(data, offset, length):
                if local:
                    pieces.append(await data.read(start, end - start))
                else:
                    remote_end = min(end, data.base_valid_len)
                    chunk = await self.reader.read_range(node.file.base, start,
                                                         remote_end - start)
                    pieces.append(chunk + bytes(end - start - len(chunk)))
        return b"".join(pieces)


def _kept(node: Node, offset: int, length: int):
    """Keep eviction away from a range of the file's cache file meanwhile (if it has one)."""
    data = node.file.data
    return contextlib.nullcontext() if data is None else data.in_use(offset, length)


def _segments(data, offset: int, length: int):
    """Split [offset, offset+length) into runs that are (local, start, end)."""
    end = offset + length
    runs: list[list] = []
    for block in data.blocks(offset, length):
        start = max(offset, block * data.block_size)
        stop = min(end, (block + 1) * data.block_size)
        local = not data.needs_fetch(block)
        if runs and runs[-1][0] == local and runs[-1][2] == start:
            runs[-1][2] = stop
        else:
            runs.append([local, start, stop])
    return [tuple(run) for run in runs]
