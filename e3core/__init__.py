"""e3core: efficiency and exploration for RL of LLMs, framework-agnostic.

The pieces of E3 (Liao et al., "Enhancing Efficiency and Exploration in Reinforcement Learning
for LLMs", EMNLP 2025, arXiv 2505.18573) and its peers, as a library: Bayesian per-prompt
difficulty, rollout allocation under a fixed budget, entropy-targeting temperature control,
advantages over uneven groups, and (in :mod:`e3core.kernels`) fused entropy / log-prob ops.
Framework adapters live in :mod:`e3core.adapters` and are imported only on request.
"""

from e3core.advantages import group_advantages, group_loss_weights
from e3core.allocation import (
    Allocator,
    Budget,
    KnapsackAllocator,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
)
from e3core.difficulty import (
    BetaDifficultyTracker,
    BetaPrior,
    GridPosterior,
    GridPrior,
    Posterior,
    PosteriorLike,
)
from e3core.metrics import pass_at_k
from e3core.prompt_keys import prompt_key
from e3core.scheduler import E3Scheduler, RolloutPlan
from e3core.settings import E3Settings
from e3core.temperature import (
    CosineAnnealedTarget,
    E3TemperatureController,
    EntropyTarget,
    FixedTarget,
    PITemperatureController,
    TemperatureController,
    WarmupMeanTarget,
)

__version__ = "0.1.0"

__all__ = [
    "Allocator",
    "BetaDifficultyTracker",
    "BetaPrior",
    "Budget",
    "CosineAnnealedTarget",
    "E3Scheduler",
    "E3Settings",
    "E3TemperatureController",
    "EntropyTarget",
    "FixedTarget",
    "GridPosterior",
    "GridPrior",
    "KnapsackAllocator",
    "PITemperatureController",
    "Posterior",
    "PosteriorLike",
    "RankAllocator",
    "RolloutPlan",
    "TemperatureController",
    "ThompsonAllocator",
    "UniformAllocator",
    "WarmupMeanTarget",
    "__version__",
    "group_advantages",
    "group_loss_weights",
    "pass_at_k",
    "prompt_key",
]
