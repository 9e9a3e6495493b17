"""``python -m metaopt`` runs the command line."""

import sys

from metaopt.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
