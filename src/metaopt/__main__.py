"""``python -m metaopt`` runs the command line."""

import sys

from metaopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
