"""Framework adapters (TRL, verl, OpenRLHF): import the one you need, e.g. ``e3core.adapters.trl``.

Nothing here is imported by ``import e3core``; each subpackage imports its framework.
"""
