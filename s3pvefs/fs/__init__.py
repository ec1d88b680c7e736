"""The filesystem core: operations on inodes, listings, renames, files deleted while open, recovery, and the assembly of it all."""
