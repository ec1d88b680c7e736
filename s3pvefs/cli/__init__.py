"""The command line: `s3pvefs mount|sync|status|refresh|check|info|lifecycle|bench`."""
