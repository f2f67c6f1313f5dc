"""`python -m iclight.standins DIR [--size tiny|full]`: random stand-in weights in the real on-disk
layouts, for tests and measurements (`pipeline/standins.py`)."""

import sys

from .pipeline.standins import main

if __name__ == "__main__":
    sys.exit(main())
