"""``python -m poolalloc``: the same as the ``poolalloc`` command."""

import sys

from poolalloc.cli.commands import main

sys.exit(main())
