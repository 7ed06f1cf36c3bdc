"""``python -m gsckit``: the same command line as ``gsckit``."""

import sys

from .cli import main

sys.exit(main())
