"""`python -m benchmarks.gpucheck OUT_DIR ...` (`make gpu-check`): see `benchmarks/gpu/check.py`."""

import sys

from .gpu.check import main

if __name__ == "__main__":
    sys.exit(main())
