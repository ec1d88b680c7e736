"""The pyfuse3 adapter, and the one place failures become errno values."""
