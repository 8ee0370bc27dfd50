r"""``E3PPOTrainer``: OpenRLHF's Ray PPO trainer with E3 allocation and temperature control.

One :class:`~e3core.E3Scheduler` lives in the trainer actor. Each step (E3, Liao et al., arXiv
2505.18573):

1. :class:`~e3core.adapters.openrlhf.generator.E3SamplesGenerator` plans the prompt batch and
   dispatches prompt :math:`i` with :math:`n_i` samples at :math:`T_t`.
2. Before the experiences are made, the policy and reference actors get
   ``set_temperature(T_t)``, so old log-probs, reference log-probs and the update use the
   temperature the samples were drawn at.
3. :class:`~e3core.adapters.openrlhf.experience.E3ExperienceMaker` shapes rewards by prompt
   group of any size.
4. After the update the rewards go to ``scheduler.observe`` by prompt, and
   ``status["entropy_loss"]`` (the token entropy OpenRLHF logs when ``--actor.entropy_coef`` is
   set; 0 logs it without adding it to the loss) to ``scheduler.observe_entropy``, which sets
   :math:`T_{t+1}` (a missing one is skipped and counted there). The scheduler's ``e3/``
   metrics join OpenRLHF's status.
5. The scheduler's state rides in the actor checkpoint's ``client_states`` (``e3_scheduler``,
   with the settings it ran under in ``e3_settings``) and is restored when training resumes,
   under the ``--e3.*`` settings (:func:`e3core.resume.load_scheduler_state`); a resumed
   checkpoint without it is refused unless ``--e3.resume_fresh true``.

Settings come from ``args.e3`` (the launcher's ``--e3.<name>`` flags; see
:class:`e3core.settings.E3Settings`), read by
:func:`~e3core.adapters.openrlhf.launcher.read_e3_args`. A sample's prompt key is computed once,
when the generator makes the sample, and carried with it
(:func:`~e3core.adapters.openrlhf.generator.sample_key`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np
import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer

from e3core.adapters.openrlhf.experience import E3ExperienceMaker
from e3core.adapters.openrlhf.generator import E3SamplesGenerator, sample_key
from e3core.adapters.openrlhf.launcher import _NAMES, read_e3_args
from e3core.resume import load_scheduler_state
from e3core.scheduler import E3Scheduler

__all__ = ["SETTINGS_KEY", "STATE_KEY", "E3PPOTrainer", "E3PPOTrainerBase", "read_e3_args"]

logger = logging.getLogger(__name__)

STATE_KEY = "e3_scheduler"
"""The ``client_states`` key of the scheduler's state in OpenRLHF's actor checkpoint."""
SETTINGS_KEY = "e3_settings"
"""The ``client_states`` key of the :class:`~e3core.settings.E3Settings` the state ran under."""
_ENTROPY_HINT = (
    "OpenRLHF logs the entropy as status['entropy_loss'] only when --actor.entropy_coef is set "
    "(0 logs it without adding it to the loss)."
)


class E3PPOTrainerBase(PPOTrainer.__ray_actor_class__):  # type: ignore[misc, name-defined]
    """The plain class behind :data:`E3PPOTrainer` (``PPOTrainer`` with E3), for tests."""

    def __init__(self, pretrain: str, strategy: Any, *groups: Any, **generate_kwargs: Any):
        settings = read_e3_args(strategy.args)
        super().__init__(pretrain, strategy, *groups, **generate_kwargs)
        self.e3_settings = settings
        args = strategy.args
        self.e3_scheduler: E3Scheduler = settings.build_scheduler(
            int(args.rollout.n_samples_per_prompt),
            vocab_size=len(self.tokenizer),
            total_steps=int(self.max_steps) if self.max_steps else None,
            steps_per_epoch=_steps_per_epoch(self),
            seed=getattr(args.train, "seed", None),
            prefix="--e3.",
        )
        self.samples_generator = E3SamplesGenerator(
            strategy=strategy,
            prompts_dataloader=self.prompts_dataloader,
            eval_dataloader=self.eval_dataloader,
            tokenizer=self.tokenizer,
            vllm_engines=self.vllm_engines,
            scheduler=self.e3_scheduler,
        )
        maker = E3ExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
        )
        maker.loss_weighting = settings.loss_weighting
        self.experience_maker = maker

    # ------------------------------------------------------------------ temperature
    def e3_set_model_temperature(self, temperature: float) -> None:
        """``set_temperature`` on the policy and reference actors (all ranks)."""
        refs = []
        for group in (self.actor_model_group, self.reference_model_group):
            if group is not None:
                refs += group.async_run_method(
                    method_name="set_temperature", temperature=temperature
                )
        ray.get(refs)

    # ------------------------------------------------------------------ the step
    def train_step(self, rollout_samples: list, global_step: int) -> tuple[dict, int]:
        """Set the step's temperature on the models, OpenRLHF's step, then observe."""
        temperature = self.samples_generator.e3_temperature
        self.e3_set_model_temperature(temperature)
        status, step = super().train_step(rollout_samples, global_step)
        status.update(self.e3_observe(rollout_samples, status.get("entropy_loss")))
        return status, step

    def e3_observe(self, rollout_samples: list, entropy: float | None) -> dict[str, float]:
        """Feed one step's samples (rewards by prompt) and entropy to the scheduler."""
        order: dict[int, int] = {}
        groups, rewards = [], []
        for sample in rollout_samples:
            key = sample_key(sample)
            groups.append(order.setdefault(key, len(order)))
            rewards.append(_scalar(sample.rewards))
        metrics = self.e3_scheduler.observe(
            list(order), np.asarray(rewards), np.asarray(groups, dtype=np.int64)
        )
        metrics.update(self.e3_scheduler.observe_entropy(entropy, hint=_ENTROPY_HINT))
        self.samples_generator.e3_planned.clear()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_logs_and_checkpoints(
        self, global_step: int, logs_dict: dict | None = None, client_states: dict | None = None
    ) -> None:
        """OpenRLHF's logging and checkpoint, with the E3 state in ``client_states``.

        The scheduler's state and the settings it ran under are saved by DeepSpeed with the
        model, in one checkpoint.
        """
        client_states = dict(client_states or {})
        client_states[STATE_KEY] = self.e3_scheduler.state_dict()
        client_states[SETTINGS_KEY] = dataclasses.asdict(self.e3_settings)
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def restore_best_checkpoint_state(self, checkpoint_states: dict) -> None:
        """OpenRLHF's restore, then the scheduler's state under the ``--e3.*`` settings.

        A resumed checkpoint (``global_step`` > 0) without the E3 state is refused, naming the
        checkpoint folder and ``--e3.resume_fresh`` (which starts the scheduler afresh without
        reading it); an invalid state is refused naming the folder. The state is loaded by
        :func:`e3core.resume.load_scheduler_state` (settings from the flags, state from the
        checkpoint, a changed controller kind is an error listing the differences).
        """
        super().restore_best_checkpoint_state(checkpoint_states)
        states = checkpoint_states or {}
        if not states.get("global_step", 0):
            return
        where = f"the checkpoint in {os.path.join(str(self.args.ckpt.path), '_actor')}"
        if self.e3_settings.resume_fresh:
            logger.warning(
                "--e3.resume_fresh=true: the E3 scheduler starts afresh; %s's E3 state is not read",
                where,
            )
            return
        state = states.get(STATE_KEY)
        if state is None:
            raise ValueError(
                f"{where} has no E3 state (client_states[{STATE_KEY!r}]): a checkpoint of "
                "plain OpenRLHF, or one written before its E3 state. Set "
                "--e3.resume_fresh=true to resume it with a fresh E3 scheduler (step, epoch, "
                "counts, prior and temperature start anew)"
            )
        try:
            load_scheduler_state(
                self.e3_scheduler,
                state,
                saved_settings=states.get(SETTINGS_KEY),
                settings=self.e3_settings,
                prefix="--e3.",
                names=_NAMES,
                log=logger,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{where}, client_states[{STATE_KEY!r}]: {exc}") from exc
        self.samples_generator.e3_temperature = self.e3_scheduler.temperature


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0])
    return float(value)


def _steps_per_epoch(trainer: Any) -> int | None:
    # OpenRLHF's prompt loader yields one prompt at a time; a step takes rollout.batch_size.
    try:
        prompts = len(trainer.prompts_dataloader)
    except TypeError:
        return None
    return max(1, prompts // int(trainer.args.rollout.batch_size)) if prompts else None


E3PPOTrainer = ray.remote(E3PPOTrainerBase)
"""The Ray actor class the launcher puts in place of OpenRLHF's ``PPOTrainer``."""
