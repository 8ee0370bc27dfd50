r"""The ``e3_grpo`` advantage estimator for verl: GRPO over uid groups of any size.

verl calls a registered estimator with the token-level rewards, the response mask, the group
index (``uid``, one per prompt and step) and ``config`` (the ``algorithm`` section). For the
sequence reward :math:`r_j = \sum_t r_{j,t}` of completion :math:`j` in group :math:`g` of size
:math:`n_g` (E3, Liao et al., arXiv 2505.18573, gives groups of different sizes):

.. math::
    A_j = w_j\,\frac{r_j - b_j}{\sigma_g + \epsilon}
    \quad(\texttt{norm\_adv\_by\_std\_in\_grpo}=\text{True}), \qquad
    A_j = w_j\,(r_j - b_j)\quad(\text{False, Dr. GRPO}),

with :math:`b_j` the group mean (``algorithm.e3_baseline=mean``) or the leave-one-out mean
(``leave_one_out``), :math:`\sigma_g` the unbiased group standard deviation, :math:`\epsilon =
10^{-6}` (verl's), and :math:`w_j = N/(G\,n_{g(j)})` with ``algorithm.e3_loss_weighting=prompt``
(1 with ``sample``). The advantage is broadcast over the response tokens.

Where verl's ``grpo`` and this differ: a group of one gets :math:`A = 0` here (verl passes the
lone reward through, :math:`A = r/(1+\epsilon)`, a signal with no baseline). For groups of two or
more, with ``baseline=mean`` and ``sample`` weighting, the two are equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from e3core._validation import check_choice
from e3core.advantages import BASELINES, LOSS_WEIGHTINGS, group_advantages, group_loss_weights

__all__ = ["ESTIMATOR_NAME", "compute_e3_grpo_advantage", "register_estimator"]

ESTIMATOR_NAME = "e3_grpo"
VERL_GRPO_EPS = 1e-6


def _setting(config: Any, name: str, default: Any) -> Any:
    if config is None:
        return default
    getter = getattr(config, "get", None)
    value = getter(name, default) if callable(getter) else getattr(config, name, default)
    return default if value is None else value


def compute_e3_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = VERL_GRPO_EPS,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages over ``index`` groups of any size (see the module docstring).

    Args:
        token_level_rewards: ``(bs, response_length)`` rewards; their row sum is the reward.
        response_mask: ``(bs, response_length)`` mask of response tokens.
        index: One group label per row (verl's ``uid``: strings), required.
        epsilon: Added to the group standard deviation.
        config: verl's ``algorithm`` config: ``norm_adv_by_std_in_grpo`` (True),
            ``e3_baseline`` (``mean``), ``e3_loss_weighting`` (``sample``).

    Returns:
        ``(advantages, returns)``, both ``(bs, response_length)``, zero outside the mask.

    Raises:
        ValueError: No ``index``, shapes that disagree, or a bad setting.
    """
    if index is None:
        raise ValueError(
            "index (verl's uid) is required: e3_grpo groups completions by prompt; verl passes "
            "it when the batch has a 'uid' column"
        )
    if token_level_rewards.shape != response_mask.shape or token_level_rewards.dim() != 2:
        raise ValueError(
            "token_level_rewards and response_mask must both be (bs, response_length), got "
            f"{tuple(token_level_rewards.shape)} and {tuple(response_mask.shape)}"
        )
    ids = np.asarray(index, dtype=object) if not isinstance(index, np.ndarray) else index
    if len(ids) != token_level_rewards.shape[0]:
        raise ValueError(
            f"index has {len(ids)} labels for {token_level_rewards.shape[0]} rows of rewards"
        )
    scale = "std" if bool(_setting(config, "norm_adv_by_std_in_grpo", True)) else "none"
    baseline = check_choice(
        "algorithm.e3_baseline", _setting(config, "e3_baseline", "mean"), BASELINES
    )
    weighting = check_choice(
        "algorithm.e3_loss_weighting",
        _setting(config, "e3_loss_weighting", "sample"),
        LOSS_WEIGHTINGS,
    )
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        adv = group_advantages(scores, ids, baseline=baseline, scale=scale, eps=float(epsilon))
        if weighting == "prompt":
            weights = np.asarray(group_loss_weights(ids, "prompt"), dtype=np.float64)
            adv = adv * torch.as_tensor(weights, dtype=adv.dtype, device=adv.device)
        out = adv.unsqueeze(-1) * response_mask.to(adv.dtype)
    return out, out


def register_estimator() -> None:
    """Register :func:`compute_e3_grpo_advantage` as verl's ``e3_grpo`` (idempotent)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    if ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not compute_e3_grpo_advantage:
        register_adv_est(ESTIMATOR_NAME)(compute_e3_grpo_advantage)
