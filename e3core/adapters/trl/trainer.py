r"""``E3GRPOTrainer``: TRL's ``GRPOTrainer`` with E3 rollout allocation and temperature control.

At each generation step (Liao et al., arXiv 2505.18573, Alg. 1):

1. The entropy measured by the policy updates since the last generation goes to the
   temperature controller, which sets :math:`T_t`.
2. The generation batch is gathered from all processes: :math:`B` prompts, each repeated
   :math:`G` times by TRL's sampler. The scheduler allocates counts :math:`n_i` with
   :math:`\sum_i n_i = B\,G` (computed on every rank, rank 0's broadcast); the rows are
   re-expanded so prompt :math:`i` appears :math:`n_i` times, and each process takes its
   usual slice, so the per-process batch shape is unchanged.
3. :math:`T_t` is set in the three places TRL reads it: the ``transformers`` generation config
   and kwargs, the vLLM sampler, and the fused LM head that computes training log-probs and
   entropy, so a buffered batch trains at the temperature it was sampled at.
4. TRL generates and scores; the advantages are then recomputed over the gathered rewards by
   prompt group of any size (:func:`e3core.group_advantages`), the fixed-group metrics are
   recomputed, and the rewards go to the difficulty tracker.

The scheduler's state is saved as ``e3_scheduler.pt`` in every checkpoint and restored by
``resume_from_checkpoint``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from trl import GRPOTrainer

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.advantages import group_advantages, group_loss_weights
from e3core.prompt_keys import prompt_key
from e3core.scheduler import E3Scheduler
from e3core.settings import E3Settings

__all__ = ["SCHEDULER_FILE", "E3GRPOTrainer", "build_scheduler", "set_fused_head_temperature"]

logger = logging.getLogger(__name__)

SCHEDULER_FILE = "e3_scheduler.pt"
"""Name of the scheduler state file inside a TRL checkpoint folder."""

_TRAIN = "train"


def _fused_head_cell(model: torch.nn.Module) -> Any:
    """The closure cell holding the temperature of TRL's fused LM head on ``model.forward``.

    Wrappers that ``accelerate`` adds around ``forward`` (fp32 output conversion and autocast
    under mixed precision) are followed through ``__wrapped__`` and callables in their closures.
    """
    pending: list[Any] = [model.forward]
    seen: set[int] = set()
    while pending:
        fn = pending.pop()
        fn = getattr(fn, "__func__", fn)
        if id(fn) in seen or len(seen) > 32:
            continue
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        closure = getattr(fn, "__closure__", None) or ()
        names = () if code is None else code.co_freevars
        if "temperature" in names and "original_forward" in names:
            return closure[names.index("temperature")]
        if getattr(fn, "__wrapped__", None) is not None:
            pending.append(fn.__wrapped__)
        for cell in closure:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value) and not isinstance(value, torch.nn.Module):
                pending.append(value)
    raise RuntimeError(
        "the model's forward is not TRL's fused LM head (add_fused_lm_head), so its "
        "temperature cannot be set; e3core's TRL adapter supports trl==1.16"
    )


def set_fused_head_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Set the temperature of the fused LM head TRL patched onto ``model``.

    TRL 1.16's ``add_fused_lm_head`` keeps the temperature in the closure of the patched
    ``forward``; the closure cell is rewritten in place, so the model, its optimiser state and
    any wrapper (DDP, PEFT, accelerate's mixed-precision forward) stay as they are.

    Args:
        model: The unwrapped model whose ``forward`` TRL patched.
        temperature: The new temperature (> 0).

    Raises:
        RuntimeError: The model's forward is not TRL's fused head (a TRL version e3core does not
            know).
    """
    _fused_head_cell(model).cell_contents = float(temperature)


def fused_head_temperature(model: torch.nn.Module) -> float:
    """The temperature in the closure of TRL's fused LM head (see set_fused_head_temperature)."""
    return float(_fused_head_cell(model).cell_contents)


def e3_settings(args: E3GRPOConfig) -> E3Settings:
    """The core :class:`~e3core.settings.E3Settings` an ``E3GRPOConfig``'s ``e3_`` fields spell."""
    return E3Settings(
        allocator=args.e3_allocator,
        value=args.e3_value,
        min_per_prompt=args.e3_min_per_prompt,
        max_per_prompt=args.e3_max_per_prompt,
        success_threshold=args.e3_success_threshold,
        prior_alpha=args.e3_prior_alpha,
        prior_beta=args.e3_prior_beta,
        decay=args.e3_decay,
        prior_kind=args.e3_prior_kind,
        refit_every=args.e3_refit_every,
        refit_min_prompts=args.e3_refit_min_prompts,
        rank_by=args.e3_rank_by,
        steps_per_epoch=args.e3_steps_per_epoch,
        widen_per_epoch=args.e3_widen_per_epoch,
        widen_min=args.e3_widen_min,
        widen_max=args.e3_widen_max,
        controller=args.e3_controller,
        target_entropy=args.e3_target_entropy,
        warmup_steps=args.e3_warmup_steps,
        kp=args.e3_kp,
        ki=args.e3_ki,
        initial_temperature=args.temperature,
        min_temperature=args.e3_min_temperature,
        max_temperature=args.e3_max_temperature,
        anneal_final_ratio=args.e3_anneal_final_ratio,
        loss_weighting=args.e3_loss_weighting,
        seed=args.e3_seed,
    )


def build_scheduler(
    args: E3GRPOConfig,
    *,
    vocab_size: int,
    total_steps: int | None,
    steps_per_epoch: int | None,
) -> E3Scheduler:
    """The ``E3Scheduler`` an ``E3GRPOConfig`` describes (through :func:`e3_settings`).

    Args:
        args: The config.
        vocab_size: The model's vocabulary size (the E3 temperature rule's :math:`V`).
        total_steps: Generation steps in the run, for the annealed target (None: no annealing).
        steps_per_epoch: Generation steps per epoch (``args.e3_steps_per_epoch`` wins).
    """
    if args.e3_anneal_final_ratio is not None and total_steps is None:
        raise ValueError(
            "e3_anneal_final_ratio needs the run's length: set max_steps, or use a sized dataset"
        )
    return e3_settings(args).build_scheduler(
        args.num_generations,
        vocab_size=vocab_size,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        seed=args.seed,
        prefix="e3_",
    )


def _prompt_key(row: dict[str, Any], column: str) -> Any:
    """A stable id for a dataset row: its id column, else a 63-bit hash of its prompt."""
    if column in row and row[column] is not None:
        value = row[column]
        return value.item() if hasattr(value, "item") else value
    return prompt_key(row.get("prompt"))


class E3GRPOTrainer(GRPOTrainer):
    r"""``GRPOTrainer`` that spends each generation step's rollouts where they teach most.

    Takes the same arguments as ``GRPOTrainer`` with an :class:`E3GRPOConfig` as ``args``, and
    optionally a ready ``scheduler`` (then the config's ``e3_`` allocation and controller
    settings are not used). See the module docstring for the per-step loop.

    Attributes:
        e3_history: One dict per generation step: the ``e3/`` metrics, the counts, the
            temperature and the rewards' mean, for reports and plots.
    """

    def __init__(self, *args: Any, scheduler: E3Scheduler | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, E3GRPOConfig):
            raise TypeError(
                f"args must be an E3GRPOConfig (GRPOConfig plus the e3_ settings), got "
                f"{type(self.args).__name__}"
            )
        if scheduler is not None and not isinstance(scheduler, E3Scheduler):
            raise TypeError(f"scheduler must be an E3Scheduler, got {type(scheduler).__name__}")
        if scheduler is not None and scheduler.rollouts_per_prompt != self.num_generations:
            raise ValueError(
                f"scheduler.rollouts_per_prompt ({scheduler.rollouts_per_prompt}) must equal "
                f"num_generations ({self.num_generations})"
            )
        if self.args.e3_enabled:
            self._e3_check_supported()
        self._e3_scheduler: E3Scheduler | None = scheduler
        self._e3_entropies: list[float] = []
        self._e3_skipped_entropies = 0
        self._e3_rewards: torch.Tensor | None = None
        self.e3_history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    def _e3_check_supported(self) -> None:
        args = self.args
        if self.use_vllm and args.vllm_mode == "server":
            raise ValueError(
                "vllm_mode='server' asks the server for a fixed n per prompt, so per-prompt counts "
                "cannot be honoured: use vllm_mode='colocate' or e3_enabled=False"
            )
        if args.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={args.multi_objective_aggregation!r} is not "
                "supported with E3: use 'sum_then_normalize' or e3_enabled=False"
            )
        if args.e3_controller != "none" and "temperature" in (args.generation_kwargs or {}):
            raise ValueError(
                "generation_kwargs sets 'temperature', which would override the controller's: "
                "remove it or set e3_controller='none'"
            )

    def _e3_generation_steps(self, optimizer_steps: int) -> int:
        per_generation = self.args.steps_per_generation * self.num_iterations
        ga = self.args.gradient_accumulation_steps
        return max(1, math.ceil(optimizer_steps * ga / per_generation))

    def _e3_steps_per_epoch(self) -> int | None:
        try:
            size = len(self.train_dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
        prompts_per_step = self.args.generation_batch_size // self.num_generations
        return max(1, size // prompts_per_step)

    @property
    def e3_scheduler(self) -> E3Scheduler:
        """The scheduler (built on first use, when the run's length is known)."""
        if self._e3_scheduler is None:
            max_steps = getattr(self.state, "max_steps", 0) or 0
            total = self._e3_generation_steps(max_steps) if max_steps > 0 else None
            self._e3_scheduler = build_scheduler(
                self.args,
                vocab_size=int(self.model.config.get_text_config().vocab_size),
                total_steps=total,
                steps_per_epoch=self._e3_steps_per_epoch(),
            )
        return self._e3_scheduler

    # ------------------------------------------------------------------ temperature
    def _e3_models(self) -> list[torch.nn.Module]:
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        models = [model]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        return models

    def set_temperature(self, temperature: float) -> None:
        """Sample and train at ``temperature`` from the next generation on (all three places)."""
        value = float(temperature)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        self.temperature = value
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.temperature = value
        kwargs = getattr(self, "generation_kwargs", None)
        if isinstance(kwargs, dict) and "temperature" in kwargs:
            kwargs["temperature"] = value
        if self.use_vllm:
            self.vllm_generation.temperature = value
        for model in self._e3_models():
            set_fused_head_temperature(model, value)

    # ------------------------------------------------------------------ the step
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        """TRL's rewards (gathered over processes), kept for the E3 advantages."""
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._e3_rewards = rewards_per_func
        return rewards_per_func

    def _compute_loss(self, model, inputs):  # type: ignore[no-untyped-def]
        """TRL's loss; the entropy it logs is kept for the temperature controller."""
        loss = super()._compute_loss(model, inputs)
        if self.model.training and self._metrics[_TRAIN]["entropy"]:
            value = float(self._metrics[_TRAIN]["entropy"][-1])
            if math.isfinite(value) and value > 0:
                self._e3_entropies.append(value)
            else:  # an all-masked micro-batch has no entropy to report
                self._e3_skipped_entropies += 1
        return loss

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        scheduler = self.e3_scheduler
        g = self.num_generations
        metrics: dict[str, float] = {}
        if self._e3_entropies:
            entropy = float(np.mean(self._e3_entropies))
            self._e3_entropies.clear()
            if self.args.e3_enabled:
                metrics.update(scheduler.observe_entropy(entropy))
            else:
                metrics["e3/entropy"] = entropy

        rows = gather_object(inputs)
        if len(rows) % g:
            raise RuntimeError(
                f"the gathered generation batch has {len(rows)} rows, not a multiple of "
                f"num_generations={g}"
            )
        keys = [_prompt_key(row, self.args.e3_prompt_id_column) for row in rows]
        slots = keys[::g]
        for k, key in enumerate(slots):
            if any(other != key for other in keys[k * g : (k + 1) * g]):
                raise RuntimeError(
                    "TRL's sampler did not repeat each prompt num_generations times in a row; "
                    "E3GRPOTrainer relies on RepeatSampler's order"
                )
        num = len(slots)
        if self.args.e3_enabled:
            plan = scheduler.plan(slots)
            payload = [plan.counts.tolist(), plan.temperature]
            broadcast_object_list(payload, from_process=0)
            counts = np.asarray(payload[0], dtype=np.int64)
            temperature = float(payload[1])
            if counts.sum() != len(rows):
                raise RuntimeError(f"allocated {counts.sum()} rollouts for {len(rows)} rows")
            self.set_temperature(temperature)
            expanded = [dict(rows[k * g]) for k in range(num) for _ in range(int(counts[k]))]
            rank = self.accelerator.process_index
            local = expanded[rank * len(inputs) : (rank + 1) * len(inputs)]
        else:
            counts = np.full(num, g, dtype=np.int64)
            local = inputs

        self._e3_rewards = None
        output = super()._generate_and_score_completions(local)
        if self._e3_rewards is None:
            raise RuntimeError("TRL did not compute rewards through _calculate_rewards")
        per_func = self._e3_rewards.detach()
        weights = self.reward_weights.to(per_func.device)
        rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        group_ids = np.repeat(np.arange(num), counts)
        scored = ~torch.isnan(rewards).cpu().numpy()

        if self.args.e3_enabled:
            advantages = self._e3_advantages(rewards, group_ids, scored)
            rank = self.accelerator.process_index
            n_local = output["advantages"].shape[0]
            local_adv = advantages[rank * n_local : (rank + 1) * n_local]
            output["advantages"] = local_adv.to(output["advantages"])
            self._logs["advantages"].clear()
            self._logs["advantages"].extend(advantages.tolist())
            zero_std = self._e3_zero_std_share(rewards, group_ids, scored)
            self._metrics[_TRAIN]["frac_reward_zero_std"][-1] = zero_std

        r = rewards.cpu().double().numpy()
        metrics.update(
            scheduler.observe([slots[k] for k in range(num)], r[scored], group_ids[scored])
        )
        metrics["e3/count_std"] = float(counts.std())
        metrics["e3/count_median"] = float(np.median(counts))
        metrics["e3/unscored"] = float((~scored).sum())
        metrics["e3/entropy_skipped"] = float(self._e3_skipped_entropies)
        metrics["e3/sample_temperature"] = float(self.temperature)
        for key, value in metrics.items():
            self._metrics[_TRAIN][key].append(value)
        self.e3_history.append(
            {
                **metrics,
                "global_step": int(self.state.global_step),
                "counts": counts.tolist(),
                "reward": float(np.nanmean(r)) if scored.any() else float("nan"),
            }
        )
        return output

    def _e3_advantages(
        self, rewards: torch.Tensor, group_ids: np.ndarray, scored: np.ndarray
    ) -> torch.Tensor:
        """Variable-group advantages matching TRL's ``scale_rewards`` (its eps of 1e-4)."""
        advantages = torch.zeros_like(rewards)
        if not scored.any():
            return advantages
        mask = torch.as_tensor(scored, device=rewards.device)
        r = rewards[mask]
        gids = torch.as_tensor(group_ids[scored], device=rewards.device)
        scale = self.scale_rewards
        if scale == "group":
            adv = group_advantages(r, gids, scale="std", eps=1e-4)
        else:
            adv = group_advantages(r, gids, scale="none")
            if scale == "batch" and r.numel() > 1:
                adv = adv / (r.std() + 1e-4)
        if self.args.e3_loss_weighting == "prompt":
            adv = adv * group_loss_weights(gids, mode="prompt").to(adv)
        advantages[mask] = adv
        return advantages

    @staticmethod
    def _e3_zero_std_share(
        rewards: torch.Tensor, group_ids: np.ndarray, scored: np.ndarray
    ) -> float:
        """Share of completions in groups with no reward spread (TRL's metric, any sizes)."""
        r = rewards.cpu().double().numpy()[scored]
        if not len(r):
            return 1.0
        g = group_ids[scored]
        size = np.bincount(g)
        low = np.full(len(size), np.inf)
        high = np.full(len(size), -np.inf)
        np.minimum.at(low, g, r)
        np.maximum.at(high, g, r)
        flat = (size < 2) | (high == low)
        return float(flat[g].mean())

    # ------------------------------------------------------------------ checkpoints
    def e3_state_dict(self) -> dict[str, Any]:
        """The adapter's resumable state: the scheduler and the pending entropies."""
        return {
            "version": 1,
            "scheduler": self.e3_scheduler.state_dict(),
            "pending_entropies": list(self._e3_entropies),
            "skipped_entropies": self._e3_skipped_entropies,
            "temperature": float(self.temperature),
        }

    def e3_load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`e3_state_dict` exactly."""
        self.e3_scheduler.load_state_dict(state["scheduler"])
        self._e3_entropies = [float(x) for x in state["pending_entropies"]]
        self._e3_skipped_entropies = int(state["skipped_entropies"])
        if self.args.e3_enabled:
            self.set_temperature(state["temperature"])

    def _save_checkpoint(self, model, trial):  # type: ignore[no-untyped-def]
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = f"checkpoint-{self.state.global_step}"
            path = os.path.join(self._get_output_dir(trial=trial), folder, SCHEDULER_FILE)
            torch.save(self.e3_state_dict(), path)

    def _load_optimizer_and_scheduler(self, checkpoint):  # type: ignore[no-untyped-def]
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, SCHEDULER_FILE)
        if not os.path.isfile(path):
            logger.warning(
                "%s has no %s: the E3 scheduler starts fresh (a checkpoint of plain GRPO?)",
                checkpoint,
                SCHEDULER_FILE,
            )
            return
        self.e3_load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
