r"""verl agent-loop worker and manager that sample each prompt at E3's count and temperature.

verl 0.9's ``AgentLoopWorkerTQ._run_prompt`` already takes a per-prompt number of samples from
the prompt's ``__rollout_n__`` field; its sampling temperature, though, is the worker's own copy
of ``actor_rollout_ref.rollout.temperature``, fixed when the Ray actor starts. The E3 trainer
(:mod:`e3core.adapters.verl.trainer`) therefore puts the step's temperature :math:`T_t` into
every prompt as ``__e3_temperature__``, and :class:`E3AgentLoopWorker` samples that prompt's
:math:`n_i` completions at it (validation prompts carry no such field and keep
``val_kwargs``). :class:`E3AgentLoopManager` is the stock ``AgentLoopManagerTQ`` with this
worker; the E3 trainer installs it through
``actor_rollout_ref.rollout.agent.agent_loop_manager_class``.
"""

from __future__ import annotations

from typing import Any

import ray
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

__all__ = [
    "MANAGER_CLASS_PATH",
    "ROLLOUT_N_FIELD",
    "TEMPERATURE_FIELD",
    "E3AgentLoopManager",
    "E3AgentLoopWorker",
]

TEMPERATURE_FIELD = "__e3_temperature__"
ROLLOUT_N_FIELD = "__rollout_n__"
MANAGER_CLASS_PATH = "e3core.adapters.verl.rollout.E3AgentLoopManager"

_WorkerBase: Any = AgentLoopWorkerTQ.__ray_actor_class__


class E3AgentLoopWorker(_WorkerBase):
    """``AgentLoopWorkerTQ`` that samples a prompt at its ``__e3_temperature__``."""

    async def _run_prompt(
        self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False
    ) -> None:
        """Run one prompt's ``__rollout_n__`` sessions at its E3 temperature, then verl's path.

        The fields are popped so they reach neither the agent loop nor the transfer queue.
        """
        temperature = prompt.pop(TEMPERATURE_FIELD, None)
        if ROLLOUT_N_FIELD in prompt:
            prompt[ROLLOUT_N_FIELD] = int(prompt[ROLLOUT_N_FIELD])
        if temperature is not None and not trajectory.get("validate", False):
            sampling_params = {**sampling_params, "temperature": float(temperature)}
        await super()._run_prompt(prompt, sampling_params, trajectory, trace=trace)


E3AgentLoopWorkerActor = ray.remote(E3AgentLoopWorker)


class E3AgentLoopManager(AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` whose workers are :class:`E3AgentLoopWorker` actors."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = E3AgentLoopWorkerActor
