r"""``E3GRPOConfig``: TRL's ``GRPOConfig`` plus the E3 settings (all prefixed ``e3_``).

Every field is a plain type so ``TrlParser`` reads it from YAML or the command line
(``--e3_allocator rank``). The budget per generation step is TRL's own:
``generation_batch_size`` rows, i.e. :math:`B` prompts times ``num_generations`` :math:`G`;
E3 redistributes those :math:`N = B\,G` rollouts over the :math:`B` prompts
(Liao et al., *Enhancing Efficiency and Exploration in RL for LLMs*, arXiv 2505.18573).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from e3core._validation import check_choice, check_float, check_int
from e3core.settings import ALLOCATORS, CONTROLLERS, PRIORS, RANK_BY, VALUES, WEIGHTING

__all__ = ["E3GRPOConfig"]


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass
class E3GRPOConfig(GRPOConfig):
    r"""``GRPOConfig`` with E3 allocation, difficulty tracking and temperature control.

    Defaults are e3core's recommended setting (knapsack allocation of the expected number of
    mixed groups under a refitted grid prior, PI control of the entropy at its first-step
    value). ``adapters/trl/paper.yaml`` holds the paper's exact setting (rank allocation widened
    4..12, the E3 temperature rule with cosine annealing).

    With ``e3_enabled=False`` the trainer is plain GRPO at the same budget (every prompt gets
    ``num_generations``, the temperature stays at ``temperature``) and still logs the ``e3/``
    metrics, for A/B runs.
    """

    e3_enabled: bool = field(default=True, metadata=_help("Turn E3 on (False: plain GRPO)."))
    e3_allocator: str = field(
        default="knapsack", metadata=_help(f"Rollout allocator, one of {ALLOCATORS}.")
    )
    e3_value: str = field(
        default="mixed",
        metadata=_help(f"Value the knapsack/thompson allocators maximise, one of {VALUES}."),
    )
    e3_min_per_prompt: int = field(
        default=2, metadata=_help("Fewest completions per prompt (1 <= min <= num_generations).")
    )
    e3_max_per_prompt: int | None = field(
        default=None,
        metadata=_help(
            "Most completions per prompt (>= num_generations; None: 4 x num_generations)."
        ),
    )
    e3_success_threshold: float = field(
        default=0.5, metadata=_help("A reward >= this counts as a success for the tracker.")
    )
    e3_prior_alpha: float = field(default=1.0, metadata=_help("Initial Beta prior alpha."))
    e3_prior_beta: float = field(default=1.0, metadata=_help("Initial Beta prior beta."))
    e3_decay: float = field(
        default=1.0, metadata=_help("Per-update decay of a prompt's counts, in (0, 1].")
    )
    e3_prior_kind: str = field(
        default="grid", metadata=_help(f"Refitted population prior, one of {PRIORS}.")
    )
    e3_refit_every: int | None = field(
        default=25,
        metadata=_help("Refit the prior every this many generation steps (None: never)."),
    )
    e3_refit_min_prompts: int = field(
        default=64, metadata=_help("Skip prior refits until this many prompts were observed.")
    )
    e3_rank_by: str = field(
        default="mean", metadata=_help(f"Difficulty rank for the rank allocator, one of {RANK_BY}.")
    )
    e3_steps_per_epoch: int | None = field(
        default=None,
        metadata=_help(
            "Generation steps per epoch for widening and epoch ranks (None: from the dataset size)."
        ),
    )
    e3_widen_per_epoch: int = field(
        default=0, metadata=_help("Widen [min, max] by this much at each epoch end (paper: 2).")
    )
    e3_widen_min: int | None = field(
        default=None, metadata=_help("Lowest min_per_prompt widening may reach (paper: 4).")
    )
    e3_widen_max: int | None = field(
        default=None, metadata=_help("Highest max_per_prompt widening may reach (paper: 12).")
    )
    e3_controller: str = field(
        default="pi", metadata=_help(f"Temperature controller, one of {CONTROLLERS}.")
    )
    e3_target_entropy: float | None = field(
        default=None,
        metadata=_help("Target token entropy (None: mean of the first e3_warmup_steps)."),
    )
    e3_warmup_steps: int = field(
        default=1, metadata=_help("Steps averaged into the target when e3_target_entropy is None.")
    )
    e3_kp: float = field(default=0.1, metadata=_help("PI controller proportional gain."))
    e3_ki: float = field(default=0.1, metadata=_help("PI controller integral gain."))
    e3_min_temperature: float = field(default=0.5, metadata=_help("Lowest sampling temperature."))
    e3_max_temperature: float = field(default=1.5, metadata=_help("Highest sampling temperature."))
    e3_anneal_final_ratio: float | None = field(
        default=None,
        metadata=_help(
            "Cosine-anneal the target entropy over the last 40% of training to this fraction "
            "of it (paper: 0.9; None: no annealing)."
        ),
    )
    e3_loss_weighting: str = field(
        default="sample",
        metadata=_help(
            f"One of {WEIGHTING}: 'prompt' scales advantages so each prompt weighs the same "
            "whatever its number of completions."
        ),
    )
    e3_prompt_id_column: str | None = field(
        default=None,
        metadata=_help(
            "Dataset column with a stable prompt id; it must exist in the training dataset. "
            "None: the column 'e3_prompt_id' if the dataset has it, else a hash of the prompt "
            "together with its images ('image' / 'images' columns) is the id."
        ),
    )
    e3_history_file: str | None = field(
        default="e3_history.csv",
        metadata=_help(
            "CSV (relative to output_dir) the main process appends one row of e3/ metrics to at "
            "every generation step; trimmed on resume, overwritten by a fresh run (None: off)."
        ),
    )
    e3_seed: int | None = field(
        default=None, metadata=_help("Seed of the scheduler's generator (None: seed).")
    )

    def __post_init__(self) -> None:
        """Check the E3 fields after TRL's own checks."""
        super().__post_init__()
        check_choice("e3_allocator", self.e3_allocator, ALLOCATORS)
        check_choice("e3_value", self.e3_value, VALUES)
        check_choice("e3_controller", self.e3_controller, CONTROLLERS)
        check_choice("e3_prior_kind", self.e3_prior_kind, PRIORS)
        check_choice("e3_rank_by", self.e3_rank_by, RANK_BY)
        check_choice("e3_loss_weighting", self.e3_loss_weighting, WEIGHTING)
        g = self.num_generations
        check_int(
            "e3_min_per_prompt", self.e3_min_per_prompt, low=1, high=g, high_name="num_generations"
        )
        if self.e3_max_per_prompt is None:
            self.e3_max_per_prompt = 4 * g
        check_int("e3_max_per_prompt", self.e3_max_per_prompt, low=g, low_name="num_generations")
        check_float("e3_success_threshold", self.e3_success_threshold)
        check_float("e3_prior_alpha", self.e3_prior_alpha, low=0.0, low_open=True)
        check_float("e3_prior_beta", self.e3_prior_beta, low=0.0, low_open=True)
        check_float("e3_decay", self.e3_decay, low=0.0, high=1.0, low_open=True)
        if self.e3_refit_every is not None:
            check_int("e3_refit_every", self.e3_refit_every, low=1)
        check_int("e3_refit_min_prompts", self.e3_refit_min_prompts, low=1)
        if self.e3_steps_per_epoch is not None:
            check_int("e3_steps_per_epoch", self.e3_steps_per_epoch, low=1)
        check_int("e3_widen_per_epoch", self.e3_widen_per_epoch, low=0)
        if self.e3_widen_min is not None:
            check_int(
                "e3_widen_min",
                self.e3_widen_min,
                low=1,
                high=self.e3_min_per_prompt,
                high_name="e3_min_per_prompt",
            )
        if self.e3_widen_max is not None:
            check_int(
                "e3_widen_max",
                self.e3_widen_max,
                low=self.e3_max_per_prompt,
                low_name="e3_max_per_prompt",
            )
        if self.e3_target_entropy is not None:
            check_float("e3_target_entropy", self.e3_target_entropy, low=0.0, low_open=True)
        check_int("e3_warmup_steps", self.e3_warmup_steps, low=1)
        check_float("e3_kp", self.e3_kp, low=0.0)
        check_float("e3_ki", self.e3_ki, low=0.0)
        check_float("e3_min_temperature", self.e3_min_temperature, low=0.0, low_open=True)
        check_float(
            "e3_max_temperature",
            self.e3_max_temperature,
            low=self.e3_min_temperature,
            low_name="e3_min_temperature",
        )
        if self.e3_controller != "none":
            check_float(
                "temperature",
                self.temperature,
                low=self.e3_min_temperature,
                high=self.e3_max_temperature,
                low_name="e3_min_temperature",
                high_name="e3_max_temperature",
                hint="or set e3_controller none",
            )
        if self.e3_anneal_final_ratio is not None:
            check_float(
                "e3_anneal_final_ratio",
                self.e3_anneal_final_ratio,
                low=0.0,
                high=1.0,
                low_open=True,
            )
        # The command line spells None as text (TrlParser passes it through as a string).
        for name in ("e3_prompt_id_column", "e3_history_file"):
            if getattr(self, name) in ("None", "none", "null"):
                setattr(self, name, None)
        if self.e3_prompt_id_column is not None and (
            not isinstance(self.e3_prompt_id_column, str) or not self.e3_prompt_id_column
        ):
            raise ValueError(
                "e3_prompt_id_column must be a non-empty column name or None, got "
                f"{self.e3_prompt_id_column!r}"
            )
        if self.e3_history_file is not None and (
            not isinstance(self.e3_history_file, str) or not self.e3_history_file
        ):
            raise ValueError(
                "e3_history_file must be a non-empty file name or None, got "
                f"{self.e3_history_file!r}"
            )
        if self.e3_seed is not None:
            check_int("e3_seed", self.e3_seed)
