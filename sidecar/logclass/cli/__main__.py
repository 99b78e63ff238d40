"""`python -m logclass.cli ARGS`, as the tests and benchmarks start the CLI."""

import sys

from logclass.cli import main

# Guarded: tools that import every module (the error-class walk in the tests) must not run it.
if __name__ == "__main__":
    sys.exit(main())
