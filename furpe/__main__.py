"""``python -m furpe``: the command line (see :mod:`furpe.cli`)."""
from __future__ import annotations

import sys

from furpe.cli import main

if __name__ == "__main__":
    sys.exit(main())
