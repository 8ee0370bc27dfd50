r"""E3 for verl (0.9, V1 trainer): a plugin loaded by ``import verl``, no fork, no user import.

* ``algorithm.adv_estimator=e3_grpo``: GRPO advantages over uid groups of any size
  (:mod:`~e3core.adapters.verl.advantage`).
* ``trainer.use_v1=True trainer.v1.trainer_mode=e3_sync`` with a ``+e3.*`` settings group:
  per-prompt rollout counts and the sampling temperature from one
  :class:`~e3core.E3Scheduler` on the driver (:mod:`~e3core.adapters.verl.trainer`,
  :mod:`~e3core.adapters.verl.rollout`).

The recipes in ``adapters/verl/`` launch verl's stock ``python -m verl.trainer.main_ppo``.
"""

from __future__ import annotations

from e3core.adapters.verl.advantage import (
    ESTIMATOR_NAME,
    compute_e3_grpo_advantage,
    register_estimator,
)
from e3core.adapters.verl.rollout import E3AgentLoopManager, E3AgentLoopWorker
from e3core.adapters.verl.trainer import TRAINER_NAME, E3PPOTrainerSync, read_e3_config

__all__ = [
    "ESTIMATOR_NAME",
    "TRAINER_NAME",
    "E3AgentLoopManager",
    "E3AgentLoopWorker",
    "E3PPOTrainerSync",
    "compute_e3_grpo_advantage",
    "read_e3_config",
    "register_estimator",
]
