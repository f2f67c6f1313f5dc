"""`python -m benchmarks.gpuquick OUT_DIR ...` (`make gpu-quick`): see `benchmarks/gpu/quick.py`."""

import sys

from .gpu.quick import main

if __name__ == "__main__":
    sys.exit(main())
