"""``python -m poolalloc``: the same as the ``poolalloc`` command."""

import sys

from poolalloc.cli import main

sys.exit(main())
