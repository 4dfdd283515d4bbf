"""`python -m esc50tf`: the same command line as the `esc50tf` script."""

import sys

from esc50tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
