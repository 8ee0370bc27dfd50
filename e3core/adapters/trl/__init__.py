"""E3 for TRL's ``GRPOTrainer``: per-prompt rollout counts, temperature control, variable groups.

``python -m e3core.adapters.trl`` runs the embedded demo (or a user's model and dataset).
This subpackage imports ``trl``; install it from a clone with ``pip install -e ".[trl]"``.
"""

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import E3GRPOTrainer, build_scheduler

__all__ = ["E3GRPOConfig", "E3GRPOTrainer", "build_scheduler"]
