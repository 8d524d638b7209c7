"""``python -m pot_sns.bench``: see :mod:`pot_sns.bench.cli` (nothing imports
this module, so that it runs once)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
