"""``python -m e3core.adapters.openrlhf``: see :mod:`e3core.adapters.openrlhf.launcher`."""

from e3core.adapters.openrlhf.launcher import main

main()
