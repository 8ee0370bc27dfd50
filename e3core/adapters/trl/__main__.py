"""``python -m e3core.adapters.trl``: see :mod:`e3core.adapters.trl.cli`."""

import sys

from e3core.adapters.trl.cli import run

if __name__ == "__main__":
    sys.exit(run())
