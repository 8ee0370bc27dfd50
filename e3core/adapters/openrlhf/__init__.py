r"""E3 for OpenRLHF (0.11, Ray + vLLM + DeepSpeed): allocation, temperature control, advantages.

* :class:`~e3core.adapters.openrlhf.generator.E3SamplesGenerator`: each prompt dispatched to vLLM
  with its E3 count at the step's temperature, whole groups per step.
* :class:`~e3core.adapters.openrlhf.experience.E3ExperienceMaker`: group_norm / dr_grpo / rloo
  over prompt groups of any size (e3core's :func:`~e3core.group_advantages`).
* :mod:`~e3core.adapters.openrlhf.actors`: policy and reference actors with ``set_temperature``.
* :class:`~e3core.adapters.openrlhf.trainer.E3PPOTrainer`: the scheduler, rewards and
  ``entropy_loss`` fed back each step, state in the checkpoints.
* ``python -m e3core.adapters.openrlhf``: OpenRLHF's launcher with ``--e3.*`` flags.

Importing this package imports OpenRLHF (and, through it, vLLM); the launcher is the entry point.
"""

from __future__ import annotations

__all__: list[str] = []
