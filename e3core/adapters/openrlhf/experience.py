r"""``E3ExperienceMaker``: OpenRLHF's advantages over prompt groups of any size.

OpenRLHF 0.11's ``RemoteExperienceMaker.compute_advantages_and_returns`` reshapes the rewards to
``(-1, n_samples_per_prompt)``, which assumes every prompt has :math:`n` samples in consecutive
blocks. Here the groups are the samples' prompts (E3 gives them :math:`n_i` samples, Liao et al.,
arXiv 2505.18573), told apart by the prompt key each sample carries from the generator
(:func:`~e3core.adapters.openrlhf.generator.sample_key`), and the shaped reward of sample
:math:`j` in group :math:`g` is e3core's :func:`~e3core.group_advantages`:

.. math::
    \tilde r_j = \frac{r_j - \bar r_g}{\sigma_g + 10^{-9}}\ (\texttt{group\_norm}),\quad
    \tilde r_j = r_j - \bar r_g\ (\texttt{dr\_grpo}),\quad
    \tilde r_j = r_j - \frac{n_g \bar r_g - r_j}{n_g - 1}\ (\texttt{rloo}),

with the unbiased :math:`\sigma_g` and :math:`\epsilon = 10^{-9}` as upstream; a group of one, or
of equal rewards, gets 0. With ``prompt`` loss weighting :math:`\tilde r_j` is scaled by
:math:`N/(G\,n_{g(j)})`. Then, as upstream: the KL term and reward clipping
(``compute_reward``), cumulative returns with :math:`\gamma = 1`, advantages = returns. For
equal groups this equals upstream exactly (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from openrlhf.models.utils import compute_reward
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

from e3core.adapters.openrlhf.generator import PROMPT_KEY_INFO
from e3core.adapters.openrlhf.launcher import ESTIMATOR_BASELINES, SUPPORTED_ESTIMATORS
from e3core.advantages import group_advantages, group_codes, group_loss_weights

__all__ = ["SUPPORTED_ESTIMATORS", "E3ExperienceMaker", "shaped_group_rewards"]

_EPS = 1e-9


def shaped_group_rewards(
    rewards: torch.Tensor, groups: Any, estimator: str, weighting: str = "sample"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-shaped rewards and each sample's group reward std (see the module docstring).

    Args:
        rewards: One reward per sample, 1-D.
        groups: Each sample's group label: its prompt key (any hashable labels work).
        estimator: ``group_norm``, ``dr_grpo`` or ``rloo`` (which sets the baseline,
            :data:`~e3core.adapters.openrlhf.launcher.ESTIMATOR_BASELINES`).
        weighting: ``sample`` or ``prompt``.

    Returns:
        ``(shaped, group_std)``, both like ``rewards``.
    """
    if estimator not in ESTIMATOR_BASELINES:
        raise ValueError(
            f"--algo.advantage.estimator={estimator!r} is not supported with E3 (groups of "
            f"different sizes); use one of {SUPPORTED_ESTIMATORS}"
        )
    labels = np.asarray(groups)
    if len(labels) != rewards.numel():
        raise ValueError(f"{len(labels)} group labels for {rewards.numel()} rewards")
    shaped = group_advantages(
        rewards,
        labels,
        baseline=ESTIMATOR_BASELINES[estimator],
        scale="std" if estimator == "group_norm" else "none",
        eps=_EPS,
    )
    if weighting == "prompt":
        w = torch.as_tensor(group_loss_weights(labels, "prompt"), dtype=rewards.dtype)
        shaped = shaped * w.to(rewards.device)
    codes, num = group_codes(labels)
    codes_t = torch.as_tensor(codes, device=rewards.device)
    counts = torch.bincount(codes_t, minlength=num).to(rewards.dtype)
    sums = torch.zeros(num, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, codes_t, rewards
    )
    means = sums / counts
    sq = torch.zeros_like(sums).index_add_(0, codes_t, (rewards - means[codes_t]) ** 2)
    std = torch.where(counts > 1, (sq / (counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))
    return shaped, std[codes_t]


def _pop_keys(experience: Any) -> torch.Tensor:
    """Remove and return the prompt keys a (concatenated) experience carries, one per sample."""
    keys = experience.info.pop(PROMPT_KEY_INFO, None)
    if keys is None:
        raise KeyError(
            f"the experience has no info[{PROMPT_KEY_INFO!r}]: E3ExperienceMaker needs the samples "
            "of E3SamplesGenerator, which carry their prompt's key"
        )
    return keys.reshape(-1).to(torch.int64)


class E3ExperienceMaker(RemoteExperienceMaker):
    """``RemoteExperienceMaker`` whose advantages group samples by prompt, any group size.

    ``loss_weighting`` (``sample`` or ``prompt``) is set by the E3 trainer.
    """

    loss_weighting: str = "sample"

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: list[Any]) -> list[Any]:
        """Length penalties, group shaping by prompt, KL and returns (module docstring)."""
        args = self.strategy.args
        for experience in experiences:
            experience.rewards = experience.rewards.to(
                torch.promote_types(experience.rewards.dtype, torch.float32)
            )
        apply_length_penalties(experiences, args)
        sizes = [len(e.rewards) for e in experiences]
        rewards = torch.cat([e.rewards for e in experiences], dim=0)
        # The prompt keys the samples carry; removed here so they are never logged as metrics.
        keys = torch.cat([_pop_keys(e) for e in experiences]).cpu().numpy()
        shaped, group_std = shaped_group_rewards(
            rewards, keys, self.advantage_estimator, self.loss_weighting
        )
        for experience, reward, std in zip(
            experiences, shaped.split(sizes), group_std.split(sizes), strict=True
        ):
            experience.info["group_reward_std"] = std
            token_reward = compute_reward(
                reward,
                self.kl_ctl.value,
                experience.kl,
                action_mask=experience.action_mask,
                reward_clip_range=args.reward.clip_range,
            )
            experience.returns = self.get_cumulative_returns(
                token_reward, experience.action_mask, 1.0
            )
            experience.advantages = experience.returns.clone()
            experience.info["return"] = token_reward.sum(dim=-1)
            experience.kl = None
        return experiences
