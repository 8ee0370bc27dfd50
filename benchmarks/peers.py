r"""The peer baselines the benchmarks measure e3core against, each written once.

None of these frameworks is installed to run the benchmarks: each function below is written in
this repository from the peer's published algorithm (``../shared/notes/peers.md`` summarises
them), kept as plain as the original so that it is timed and compared as the peer runs it.

* Advantages: TRL's fixed-group reshape (:func:`trl_reshape_advantages`) and verl's per-uid loop
  (:func:`verl_loop_advantages`; the E3 paper's reference code is a verl 0.3.1 fork and computes
  its advantages the same way, a size-1 group passing its raw reward).
* Difficulty bookkeeping: one ``[alpha, beta]`` list per prompt in a Python dict, as MoPPS keeps
  its Beta posteriors (:class:`DictBetaTracker`).
* Allocation: Knapsack RL's point-estimate knapsack (:class:`PointKnapsack`).
* Token entropy from logits: verl's :math:`\operatorname{lse}(z) - \sum_v p_v z_v`
  (:func:`verl_entropy`) and TRL's ``log_softmax`` over chunks of rows
  (:func:`trl_chunked_entropy`).

The E3 paper's allocation and temperature rules are not here: the benchmarks run them through
e3core itself (:class:`e3core.RankAllocator`, :meth:`e3core.E3Scheduler.paper`), whose tests
check them against a plain loop of the paper's rule.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal, get_args

import numpy as np
import torch

from e3core import Budget

PointValue = Literal["info", "mixed"]
"""A :class:`PointKnapsack` value: :math:`w = \\hat p(1-\\hat p)^2` (``"info"``) or 1."""
POINT_VALUES: tuple[str, ...] = get_args(PointValue)


# ------------------------------------------------------------------ advantages
def trl_reshape_advantages(rewards: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    r"""Fixed-size GRPO advantages as TRL computes them (equal, contiguous groups only).

    Args:
        rewards: ``[B * G]`` rewards, group ``g`` at ``[g*G, (g+1)*G)``.
        group_size: ``G``.
        eps: Added to the unbiased std.

    Returns:
        :math:`(r - \bar r_g) / (\sigma_g + \epsilon)` per sample.
    """
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size, dim=0)
    std = grouped.std(dim=1).repeat_interleave(group_size, dim=0)
    return (rewards - mean) / (std + eps)


def verl_loop_advantages(scores: torch.Tensor, index: list[str], eps: float) -> torch.Tensor:
    r"""The per-uid GRPO outcome advantage of verl as a Python loop (the algorithm, re-written).

    verl's ``compute_grpo_outcome_advantage``: a dict from uid to a list of scores,
    ``torch.mean`` / ``torch.std`` per uid, then a loop over samples.

    Args:
        scores: ``[N]`` rewards (copied, not modified).
        index: uid string of every sample.
        eps: Added to the unbiased std.

    Returns:
        :math:`(r - \bar r_u) / (\sigma_u + \epsilon)`; a uid seen once keeps its raw reward.
    """
    scores = scores.clone()
    by_uid: dict[str, list[torch.Tensor]] = defaultdict(list)
    uid_mean: dict[str, torch.Tensor] = {}
    uid_std: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i in range(scores.shape[0]):
            by_uid[index[i]].append(scores[i])
        for uid, values in by_uid.items():
            if len(values) == 1:
                uid_mean[uid] = torch.tensor(0.0)
                uid_std[uid] = torch.tensor(1.0)
            else:
                uid_mean[uid] = torch.mean(torch.stack(values))
                uid_std[uid] = torch.std(torch.stack(values))
        for i in range(scores.shape[0]):
            scores[i] = (scores[i] - uid_mean[index[i]]) / (uid_std[index[i]] + eps)
    return scores


# --------------------------------------------------------------------- tracker
class DictBetaTracker:
    r"""Per-prompt Beta bookkeeping in a Python dict (MoPPS-style): ``id -> [alpha, beta]``.

    A prompt enters at the prior :math:`(\alpha_0, \beta_0)`; each update adds its successes to
    :math:`\alpha` and its failures to :math:`\beta` (no forgetting).

    Args:
        alpha0: Prior :math:`\alpha_0`.
        beta0: Prior :math:`\beta_0`.
    """

    def __init__(self, alpha0: float = 1.0, beta0: float = 1.0) -> None:
        self.alpha0, self.beta0 = alpha0, beta0
        self.table: dict[Any, list[float]] = {}

    def update(self, ids: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> None:
        """Add ``successes`` and ``trials - successes`` to each id's parameters."""
        table = self.table
        for pid, s, t in zip(ids.tolist(), successes.tolist(), trials.tolist(), strict=True):
            entry = table.get(pid)
            if entry is None:
                entry = table[pid] = [self.alpha0, self.beta0]
            entry[0] += s
            entry[1] += t - s

    def posterior(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alpha and beta arrays of ``ids`` (the prior for unseen ones)."""
        default = (self.alpha0, self.beta0)
        pairs = [self.table.get(pid, default) for pid in ids.tolist()]
        arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]


# ------------------------------------------------------------------ allocation
class PointKnapsack:
    r"""Knapsack RL's rule (arXiv 2509.25849): an exact knapsack on a point estimate.

    :math:`\hat p` is the success rate of the prompt's last group (no uncertainty). Prompts never
    seen get the uniform share, prompts with :math:`\hat p \in \{0, 1\}` the minimum, and the rest
    of the budget goes to the others by exact greedy knapsack on the concave value

    .. math:: V(n, \hat p) = \bigl[1 - \hat p^{\,n} - (1 - \hat p)^n\bigr]\, w(\hat p),

    :math:`w = \hat p(1-\hat p)^2` (``"info"``) or 1 (``"mixed"``): each extra rollout of a prompt
    at :math:`n` adds :math:`w\,[\hat p^{\,n}(1-\hat p) + \hat p(1-\hat p)^n]`, and the largest
    gains are taken. Budget the knapsack cannot use is spread round-robin.

    Args:
        value: ``"info"`` or ``"mixed"``.
        num_prompts: Size of the prompt id space (ids are ``0 .. num_prompts - 1``).

    Attributes:
        last: ``[num_prompts]`` success rate of every prompt's last group, NaN before its first.

    Raises:
        ValueError: ``value`` is not one of :data:`POINT_VALUES`, or ``num_prompts`` < 0.
    """

    def __init__(self, value: PointValue, num_prompts: int) -> None:
        if value not in POINT_VALUES:
            raise ValueError(f"value must be one of {', '.join(POINT_VALUES)}; got {value!r}")
        if num_prompts < 0:
            raise ValueError(f"num_prompts must be >= 0; got {num_prompts}")
        self.value = value
        self.last = np.full(num_prompts, np.nan)

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """Rollout counts for the prompts ``ids``, summing to ``budget.total``."""
        lo = budget.min_per_prompt
        hi = budget.max_per_prompt or budget.total
        num = len(ids)
        p_hat = self.last[ids]
        unseen = np.isnan(p_hat)
        mid = ~unseen & (p_hat > 0) & (p_hat < 1)
        counts = np.full(num, lo, dtype=np.int64)
        counts[unseen] = min(max(budget.total // num, lo), hi)
        spare = budget.total - int(counts.sum())
        pos = np.flatnonzero(mid)
        if spare > 0 and len(pos):
            p = p_hat[pos][:, None]
            n = np.arange(lo, hi, dtype=np.float64)[None, :]
            w = p * (1.0 - p) ** 2 if self.value == "info" else np.ones_like(p)
            gain = (w * (p**n * (1.0 - p) + p * (1.0 - p) ** n)).ravel()
            take = np.argsort(-gain, kind="stable")[:spare]
            add = np.bincount(take // (hi - lo), minlength=len(pos))
            counts[pos] += add
            spare -= int(add.sum())
        while spare > 0:  # the knapsack prompts are full: spread the rest
            room = np.flatnonzero(counts < hi)
            step = room[:spare]
            counts[step] += 1
            spare -= len(step)
        return counts

    def record(self, ids: np.ndarray, successes: np.ndarray, counts: np.ndarray) -> None:
        """Remember each prompt's last group: ``successes`` out of ``counts`` rollouts."""
        self.last[ids] = successes / counts


# --------------------------------------------------------------------- entropy
def verl_entropy(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Label log-prob and entropy the way verl writes them (one full softmax).

    .. math:: H = \operatorname{lse}(z) - \sum_v \operatorname{softmax}(z)_v\, z_v,
              \qquad z = \text{fp32 logits} / T.

    Args:
        logits: ``[N, V]`` logits.
        labels: ``[N]`` label ids.
        temperature: :math:`T`.

    Returns:
        ``(logprobs, entropy)``, each ``[N]`` float32.
    """
    z = logits.float() / temperature
    lse = torch.logsumexp(z, dim=-1)
    ent = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
    lp = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    return lp, ent


def trl_chunked_entropy(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float, rows: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Label log-prob and entropy the way TRL writes them: ``log_softmax`` per chunk of rows.

    .. math:: H = -\sum_v p_v \log p_v, \qquad \log p = \operatorname{log\_softmax}(z / T)
              \text{ in fp32}.

    Args:
        logits: ``[N, V]`` logits.
        labels: ``[N]`` label ids.
        temperature: :math:`T`.
        rows: Rows per chunk.

    Returns:
        ``(logprobs, entropy)``, each ``[N]`` float32.
    """
    lps, ents = [], []
    for start in range(0, logits.shape[0], rows):
        ls = torch.log_softmax(logits[start : start + rows].float() / temperature, dim=-1)
        lps.append(ls.gather(-1, labels[start : start + rows].unsqueeze(-1)).squeeze(-1))
        ents.append(-(ls.exp() * ls).sum(-1))
    return torch.cat(lps), torch.cat(ents)
