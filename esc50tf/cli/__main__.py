"""`python -m esc50tf.cli`: the same command line as the `esc50tf` script."""

import sys

from esc50tf.cli import main

sys.exit(main())
