"""verl plugin entry point: ``import verl`` imports this module, which registers e3core.

Registered through the ``verl.plugins`` entry point in e3core's ``pyproject.toml``, so every
process that imports verl (the driver, Ray workers) has the ``e3_grpo`` advantage estimator and
the ``e3_sync`` trainer with no user import. verl's loader hides a failing plugin at DEBUG
level; a failure here is also logged as a warning and re-raised.
"""

from __future__ import annotations

import logging

__all__ = ["register"]

_logger = logging.getLogger(__name__)


def register() -> None:
    """Register the ``e3_grpo`` estimator and the ``e3_sync`` trainer (idempotent)."""
    try:
        from e3core.adapters.verl.advantage import register_estimator

        register_estimator()
        import e3core.adapters.verl.trainer  # noqa: F401  (registers e3_sync on import)
    except Exception as exc:
        _logger.warning("e3core's verl plugin failed to register: %r", exc)
        raise


register()
