"""s3pvefs: a FUSE filesystem that mounts an S3 bucket as a Proxmox VE directory storage."""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("s3pvefs")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
