"""OpenRLHF model actors whose sampling temperature can change during a run.

OpenRLHF 0.11 fixes the temperature of the policy and reference models when they are built
(``Actor(temperature=args.rollout.temperature)``); log-probs and entropy are computed on logits
divided by it. E3 changes the sampling temperature every step, and the old log-probs, the
reference log-probs and the update must use the temperature the samples were drawn at, so these
Ray actors add ``set_temperature``. The launcher installs them in place of OpenRLHF's.
"""

from __future__ import annotations

from typing import Any

import ray
from openrlhf.trainer.ray.launcher import ReferenceModelActor
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from e3core._validation import check_float

__all__ = [
    "E3PolicyModelActor",
    "E3ReferenceModelActor",
    "TemperatureMixin",
]


class TemperatureMixin:
    """``set_temperature`` / ``get_temperature`` for a Ray model actor holding an ``Actor``."""

    _model_attribute = "actor"

    def set_temperature(self, temperature: float) -> float:
        """Divide the logits by ``temperature`` (> 0) from now on; returns it."""
        value = check_float("temperature", temperature, low=0.0, low_open=True)
        getattr(self, self._model_attribute).temperature = value
        return value

    def get_temperature(self) -> float:
        """The temperature the model's logits are divided by."""
        return float(getattr(self, self._model_attribute).temperature)


_Policy: Any = PolicyModelActor.__ray_actor_class__
_Reference: Any = ReferenceModelActor.__ray_actor_class__


@ray.remote(num_gpus=1)
class E3PolicyModelActor(TemperatureMixin, _Policy):
    """OpenRLHF's ``PolicyModelActor`` with ``set_temperature``."""

    _model_attribute = "actor"


@ray.remote(num_gpus=1)
class E3ReferenceModelActor(TemperatureMixin, _Reference):
    """OpenRLHF's ``ReferenceModelActor`` with ``set_temperature``."""

    _model_attribute = "model"
