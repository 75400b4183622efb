"""``python -m modgap COMMAND ...``: the same command line as ``modgap``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
