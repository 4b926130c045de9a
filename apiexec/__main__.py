"""``python -m apiexec``: the command line."""

import sys

from apiexec.cli import main

sys.exit(main())
