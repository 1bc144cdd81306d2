"""python -m lab.fake_do: see lab.fake_do.server."""

import sys

from lab.fake_do.server import main

if __name__ == "__main__":
    sys.exit(main())
