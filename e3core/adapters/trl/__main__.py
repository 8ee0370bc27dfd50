"""``python -m e3core.adapters.trl``: see :mod:`e3core.adapters.trl.cli`."""

from e3core.adapters.trl.cli import main

if __name__ == "__main__":
    main()
