"""`python -m s3pvefs ...` is the same as the `s3pvefs` command."""

import sys

from s3pvefs.cli.main import main

sys.exit(main())
