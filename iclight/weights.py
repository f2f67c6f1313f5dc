"""`python -m iclight.weights fetch|lock|verify|prepare`: the same as `iclight weights ...`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["weights", *sys.argv[1:]], prog="python -m iclight"))
