"""What the mount knows of each file: the inode tree, each file's lifecycle, the crash journal, the block cache, the attribute index."""
