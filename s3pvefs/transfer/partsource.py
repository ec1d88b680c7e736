"""Where the bytes of an upload come from: a file's cache file, and its object on S3 for the
blocks the cache does not hold.

A part is sent from the cache file as a ``SliceBody`` (store/body.py): read as the socket takes
it, never whole in memory. Blocks only S3 has are fetched into the cache first (the reader's
GETs, bounded as every read's), so that a part of a large image re-uploaded after a few blocks
changed is sent the same way. Only where that cannot be done (no cache file, a fetch that did
not stay) is the part assembled in memory, as a small PUT's body always is.
"""

from __future__ import annotations

from s3pvefs.state.nodes import Node
from s3pvefs.store.body import SliceBody
from s3pvefs.transfer.reader import BlockReader
from s3pvefs.transfer.wholesum import crc_of

FETCH_ROUNDS = 3  # fetches of a part's missing blocks before it is assembled in memory


class PartSource:
    def __init__(self, reader: BlockReader):
        self.reader = reader

    async def body(self, node: Node, offset: int, length: int) -> tuple[bytes | SliceBody, int]:
        """The body of the part [offset, offset+length) and the CRC64NVME of its bytes. The
        caller keeps the range ``in_use`` until the body is sent."""
        data = node.file.data
        if data is not None:
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
