"""`python -m brainline chat ...`: the same program as the `brainline` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
