r"""``e3_sync``: verl's synchronous V1 trainer with E3 allocation and temperature control.

Selected with ``trainer.use_v1=True trainer.v1.trainer_mode=e3_sync`` on verl's own launcher
(``python -m verl.trainer.main_ppo``); the settings are a top-level ``e3`` group
(``+e3.allocator=rank``, see :class:`e3core.settings.E3Settings`, plus ``e3.prompt_id_key``). One
scheduler lives on the driver, so every worker samples and trains at the same temperature.
Each step (E3, Liao et al., arXiv 2505.18573, Alg. 1):

1. ``_next_train_batch``: the :math:`B` prompts fetched from the dataloader go to
   ``scheduler.plan`` with the budget :math:`B\cdot G` (:math:`G` = ``rollout.n``); prompt
   :math:`i` gets ``__rollout_n__`` :math:`= n_i` (verl samples that many) and
   ``__e3_temperature__`` :math:`= T_t` (read by :class:`~e3core.adapters.verl.rollout.
   E3AgentLoopWorker`), and the driver's ``actor_rollout_ref.rollout.temperature`` is set to
   :math:`T_t`, so the old log-probs, the reference log-probs and the actor update use the
   temperature the completions were sampled at.
2. verl's own step runs (rewards, log-probs, advantages with ``algorithm.adv_estimator=e3_grpo``
   over the uneven uid groups, the update).
3. The sequence rewards are read back by uid, mapped to the prompts' stable ids and fed to
   ``scheduler.observe``, and ``actor/entropy`` (the mean token entropy of this step's
   completions at :math:`T_t`, computed by verl with the old log-probs) to
   ``scheduler.observe_entropy``, which sets :math:`T_{t+1}` (a missing one is skipped and
   counted there). The scheduler's ``e3/`` metrics, and ``e3/failed_prompts``, go to verl's
   logger.

``trainer_mode`` reads ``"sync"`` inside the trainer, so verl's sync-only paths (replay buffer,
checkpoints) are the ones taken. The scheduler's state is saved as ``e3_scheduler.pt`` in every
``global_step_N`` checkpoint folder (first, atomically, with the settings it ran under) and
restored on resume under the ``e3`` settings (:func:`e3core.resume.load_scheduler_state`); a
checkpoint without it, or a corrupt one, is refused unless ``e3.resume_fresh=true``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf, open_dict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.debug import marked_timer

from e3core.adapters.verl.advantage import ESTIMATOR_NAME
from e3core.adapters.verl.rollout import (
    MANAGER_CLASS_PATH,
    ROLLOUT_N_FIELD,
    TEMPERATURE_FIELD,
    E3AgentLoopManager,
)
from e3core.checkpoint_io import atomic_torch_save, load_state_file
from e3core.prompt_keys import prompt_key
from e3core.resume import load_scheduler_state
from e3core.scheduler import E3Scheduler
from e3core.settings import E3Settings

__all__ = ["PROMPT_ID_KEY", "STATE_FILE", "TRAINER_NAME", "E3PPOTrainerSync", "read_e3_config"]

logger = logging.getLogger(__name__)

TRAINER_NAME = "e3_sync"
STATE_FILE = "e3_scheduler.pt"
_ENTROPY_HINT = "verl reported no positive actor/entropy for this step's update."
PROMPT_ID_KEY = "prompt_id_key"
"""The ``e3`` key (not an :class:`E3Settings` field) naming the batch field of a prompt's id."""
_RENAMED = {"prompt_key": PROMPT_ID_KEY}
_NAMES = {
    "rollouts_per_prompt": "actor_rollout_ref.rollout.n",
    "initial_temperature": "actor_rollout_ref.rollout.temperature",
}


def _given_settings(config: DictConfig) -> set[str]:
    raw = config.get("e3", None)
    return set(raw.keys()) if raw is not None else set()


def read_e3_config(config: DictConfig) -> tuple[E3Settings, str]:
    """The validated :class:`E3Settings` and prompt-id field of a verl config's ``e3`` group.

    ``e3.prompt_id_key`` names the dataset field that identifies a prompt across steps (default
    ``raw_prompt``: a 63-bit hash of the chat, :func:`e3core.prompt_key`; a scalar field such
    as ``index`` is used as is, but verl's ``index`` is 0 for every row whose ``extra_info`` has
    none). The initial temperature is ``actor_rollout_ref.rollout.temperature`` unless
    ``e3.initial_temperature`` is given; messages name verl's settings where they set a bound.
    ``e3.loss_weighting`` and ``e3.baseline`` are handed to the ``e3_grpo`` estimator as
    ``algorithm.e3_loss_weighting`` and ``algorithm.e3_baseline`` when the trainer starts
    (setting both spellings differently is an error).

    Raises:
        ValueError, TypeError: A bad or unknown setting, named as ``e3.<name>``.
    """
    raw = config.get("e3", None)
    data: dict[str, Any] = {}
    if raw is not None:
        if not isinstance(raw, DictConfig | dict):
            raise TypeError(f"e3 must be a mapping of settings, got {raw!r}")
        data = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
        data = dict(data)
    for old, new in _RENAMED.items():
        if old in data:
            raise ValueError(f"e3.{old} is now e3.{new}: rename it (got e3.{old}={data[old]!r})")
    field = data.pop(PROMPT_ID_KEY, "raw_prompt")
    if not isinstance(field, str) or not field:
        raise TypeError(f"e3.{PROMPT_ID_KEY} must be a dataset field name, got {field!r}")
    names = dict(_NAMES)
    if "initial_temperature" in data:
        del names["initial_temperature"]
    else:
        data["initial_temperature"] = float(config.actor_rollout_ref.rollout.temperature)
    settings = E3Settings.from_mapping(data, prefix="e3.")
    g = int(config.actor_rollout_ref.rollout.n)
    return settings.validate(g, prefix="e3.", names=names), field


def _install_manager(config: DictConfig) -> None:
    agent = config.actor_rollout_ref.rollout.agent
    current = agent.get("agent_loop_manager_class", None)
    if not current:
        with open_dict(agent):
            agent.agent_loop_manager_class = MANAGER_CLASS_PATH
        return
    module, _, name = str(current).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={current!r} cannot be "
            f"imported ({exc})"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, E3AgentLoopManager)):
        raise ValueError(
            f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={current!r} is not an "
            f"E3AgentLoopManager: the e3_sync trainer needs its workers to sample at E3's "
            f"temperature; leave the setting unset or subclass {MANAGER_CLASS_PATH}"
        )


def _sync_estimator_settings(config: DictConfig, settings: E3Settings, given: set[str]) -> None:
    """Hand ``e3.loss_weighting`` / ``e3.baseline`` to the estimator (it reads ``algorithm``)."""
    algorithm = config.algorithm
    for name in ("loss_weighting", "baseline"):
        key = f"e3_{name}"
        value = getattr(settings, name)
        current = algorithm.get(key, None)
        if current is not None and name in given and str(current) != value:
            raise ValueError(
                f"e3.{name}={value!r} and algorithm.{key}={current!r} disagree; set one of them"
            )
        if current is None or name in given:
            with open_dict(algorithm):
                algorithm[key] = value


def _set_driver_temperature(config: DictConfig, temperature: float) -> None:
    rollout = config.actor_rollout_ref.rollout
    with open_dict(rollout):
        rollout.temperature = float(temperature)


def _checkpoint_folder(config: DictConfig, global_steps: int) -> str:
    trainer = config.trainer
    if trainer.resume_mode == "resume_path" and trainer.get("resume_from_path"):
        folder = str(trainer.resume_from_path)
    else:
        folder = os.path.join(str(trainer.default_local_dir), f"global_step_{global_steps}")
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


@register_trainer(TRAINER_NAME)
class E3PPOTrainerSync(PPOTrainerSync):
    """verl's ``PPOTrainerSync`` with E3 (see the module docstring for the per-step loop)."""

    def __init__(self, config: DictConfig):
        self.e3_settings, self.e3_prompt_id_key = read_e3_config(config)
        _sync_estimator_settings(config, self.e3_settings, _given_settings(config))
        _install_manager(config)
        estimator = str(config.algorithm.adv_estimator)
        if estimator != ESTIMATOR_NAME:
            logger.warning(
                "e3_sync with algorithm.adv_estimator=%s: groups have different sizes under E3; "
                "use %s for e3core's variable-group advantages (verl's grpo passes a group of "
                "one's reward through as its advantage)",
                estimator,
                ESTIMATOR_NAME,
            )
        super().__init__(config)
        self._e3_scheduler: E3Scheduler | None = None
        self._e3_pending: dict[str, Any] = {}

    # verl's base class branches on ``trainer_mode == "sync"``; this trainer is synchronous.
    @property
    def trainer_mode(self) -> str:
        """Always ``"sync"``: verl's synchronous code paths are the ones this trainer needs."""
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.e3_registered_mode = value

    # ------------------------------------------------------------------ scheduler
    @property
    def e3_scheduler(self) -> E3Scheduler:
        """The run's scheduler, built on first use from ``e3`` and the loaded dataset."""
        if self._e3_scheduler is None:
            tokenizer = getattr(self, "tokenizer", None)
            self._e3_scheduler = self.e3_settings.build_scheduler(
                int(self.config.actor_rollout_ref.rollout.n),
                vocab_size=len(tokenizer) if tokenizer is not None else None,
                total_steps=getattr(self, "total_training_steps", None),
                steps_per_epoch=getattr(self, "steps_per_epoch", None),
                seed=self.config.data.get("seed", None),
            )
        return self._e3_scheduler

    def e3_prompt_ids(self, batch: Any) -> list[Any]:
        """The stable prompt ids of a dataloader batch (see :func:`read_e3_config`)."""
        if self.e3_prompt_id_key not in batch:
            raise KeyError(
                f"e3.{PROMPT_ID_KEY}={self.e3_prompt_id_key!r} is not a field of the training "
                f"batch (fields: {sorted(batch.keys())})"
            )
        column = batch[self.e3_prompt_id_key]
        ids: list[Any] = []
        for i in range(len(batch)):
            value = column[i]
            if isinstance(value, torch.Tensor):
                value = value.item() if value.numel() == 1 else value.tolist()
            if isinstance(value, bool | int | str | np.integer):
                ids.append(value.item() if isinstance(value, np.integer) else value)
            else:
                ids.append(prompt_key(value))
        return ids

    # ------------------------------------------------------------------ step hooks
    def _next_train_batch(self, num_prompts: int | None = None) -> Any:
        """Verl's batch with each prompt's E3 count and the step's temperature attached."""
        batch = super()._next_train_batch(num_prompts)
        ids = self.e3_prompt_ids(batch)
        plan = self.e3_scheduler.plan(ids)
        size = len(batch)
        batch[ROLLOUT_N_FIELD] = torch.as_tensor(plan.counts, dtype=torch.int64)
        batch[TEMPERATURE_FIELD] = torch.full((size,), float(plan.temperature), dtype=torch.float64)
        _set_driver_temperature(self.config, plan.temperature)
        for uid, pid in zip(list(batch["uid"]), ids, strict=True):
            self._e3_pending[str(uid)] = pid
        return batch

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        """Verl's step, then the scheduler observes its rewards and entropy."""
        batch = super().step(metrics, timing_raw)
        with marked_timer("e3", timing_raw):
            metrics.update(self._e3_observe(batch, metrics))
        return batch

    def _e3_observe(self, batch: Any, metrics: dict) -> dict[str, float]:
        rows = [i for i, tag in enumerate(batch.tags) if not (tag or {}).get("is_padding", False)]
        keys = [batch.keys[i] for i in rows]
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["uid", "rm_scores"]
        )
        uids = [str(u) for u in data["uid"]]
        scores = data["rm_scores"]
        if getattr(scores, "is_nested", False):
            scores = torch.nested.to_padded_tensor(scores, 0.0)
        rewards = scores.reshape(len(keys), -1).sum(dim=-1).double().cpu().numpy()
        return self.e3_observe_rows(keys, uids, rewards, metrics.get("actor/entropy"))

    def e3_observe_rows(
        self, keys: list[str], uids: list[str], rewards: np.ndarray, entropy: float | None
    ) -> dict[str, float]:
        """Feed one step's rows (transfer-queue keys, uids, sequence rewards) to the scheduler.

        A multi-output agent session (keys ``{uid}_{session}_{index}``) counts once, by its
        last output, as verl's GRPO does. Every uid must come from this trainer's
        ``_next_train_batch``.
        """
        last: dict[str, tuple[int, int]] = {}
        for j, key in enumerate(keys):
            uid_part, session, index = str(key).rsplit("_", 2)
            session_key = f"{uid_part}_{session}"
            if session_key not in last or last[session_key][0] < int(index):
                last[session_key] = (int(index), j)
        chosen = sorted(j for _, j in last.values())
        unknown = sorted({uids[j] for j in chosen} - set(self._e3_pending))
        if unknown:
            raise RuntimeError(
                f"{len(unknown)} uid(s) in the step's batch were not planned by the e3_sync "
                f"trainer (first: {unknown[0]!r}); E3 needs the synchronous trainer's batches"
            )
        order: dict[str, int] = {}
        for j in chosen:
            order.setdefault(uids[j], len(order))
        prompt_ids = [self._e3_pending[uid] for uid in order]
        group_ids = np.array([order[uids[j]] for j in chosen], dtype=np.int64)
        step_rewards = np.asarray(rewards, dtype=np.float64)[chosen]
        failed = len(set(self._e3_pending) - set(order))
        self._e3_pending.clear()
        out = self.e3_scheduler.observe(prompt_ids, step_rewards, group_ids)
        out.update(self.e3_scheduler.observe_entropy(entropy, hint=_ENTROPY_HINT))
        out["e3/failed_prompts"] = float(failed)
        return out

    def fit(self, agent_loop_manager: Any) -> None:
        """Verl's training loop; the manager must be an :class:`E3AgentLoopManager`."""
        if not isinstance(agent_loop_manager, E3AgentLoopManager):
            raise TypeError(
                f"the e3_sync trainer needs an E3AgentLoopManager ({MANAGER_CLASS_PATH}), got "
                f"{type(agent_loop_manager).__name__}: its workers would sample at verl's fixed "
                "temperature"
            )
        super().fit(agent_loop_manager)

    # ------------------------------------------------------------------ checkpoints
    def e3_state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the scheduler's state, and the settings it ran under."""
        return {
            "scheduler": self.e3_scheduler.state_dict(),
            "settings": dataclasses.asdict(self.e3_settings),
        }

    def e3_load_state_dict(self, state: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Restore :meth:`e3_state_dict` under the ``e3`` settings, and the driver's temperature.

        :func:`e3core.resume.load_scheduler_state` applies the one rule: settings from the
        config, state from the checkpoint, a changed controller kind is an error listing the
        differences, applied differences logged once.

        Returns:
            The applied differences, ``{name: (saved, current)}``.

        Raises:
            ValueError: Not an ``e3_sync`` state, an invalid one, or a changed controller kind.
        """
        if not isinstance(state, dict) or "scheduler" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not an e3_sync state (keys: {keys})")
        changes = load_scheduler_state(
            self.e3_scheduler,
            state["scheduler"],
            saved_settings=state.get("settings"),
            settings=self.e3_settings,
            prefix="e3.",
            names=_NAMES,
            log=logger,
        )
        _set_driver_temperature(self.config, self.e3_scheduler.temperature)
        return changes

    def _save_checkpoint(self) -> None:
        # Written before verl's own files, and atomically (temporary file, fsync, rename), so a
        # checkpoint verl marks as complete has it whole.
        folder = os.path.join(
            str(self.config.trainer.default_local_dir), f"global_step_{self.global_steps}"
        )
        os.makedirs(folder, exist_ok=True)
        atomic_torch_save(self.e3_state_dict(), os.path.join(folder, STATE_FILE))
        super()._save_checkpoint()

    def _load_checkpoint(self) -> Any:
        """Verl's resume, then the E3 state of the same ``global_step_N`` folder.

        A checkpoint without ``e3_scheduler.pt`` is refused (naming the file and
        ``e3.resume_fresh``), as is a corrupt one; ``e3.resume_fresh=true`` starts the scheduler
        afresh without reading it.
        """
        result = super()._load_checkpoint()
        if self.global_steps <= 0:
            return result
        path = os.path.join(_checkpoint_folder(self.config, self.global_steps), STATE_FILE)
        if self.e3_settings.resume_fresh:
            logger.warning(
                "e3.resume_fresh=true: the E3 scheduler starts afresh, %s is not read", path
            )
            return result
        state = load_state_file(path, fresh_option="e3.resume_fresh=true")
        try:
            self.e3_load_state_dict(state)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        logger.info("e3: restored the scheduler from %s", path)
        return result
