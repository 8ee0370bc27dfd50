r"""GRPO-family advantages over groups of any size, and per-prompt loss weights.

With per-prompt rollout counts (E3, Liao et al., arXiv 2505.18573) the completions of a batch form
groups of different sizes :math:`n_g`. For completion :math:`j` of group :math:`g` with reward
:math:`r_j`, group mean :math:`\bar r_g` and unbiased standard deviation :math:`\sigma_g` (as TRL
and verl), :func:`group_advantages` returns

.. math::
    A_j = \frac{r_j - b_j}{\sigma_g + \epsilon}\ (\texttt{scale="std"}) \quad\text{or}\quad
    A_j = r_j - b_j\ (\texttt{scale="none"}, \text{Dr. GRPO}),

with :math:`b_j = \bar r_g` (``baseline="mean"``, GRPO) or the leave-one-out mean
:math:`b_j = (n_g \bar r_g - r_j)/(n_g - 1)` (``"leave_one_out"``, RLOO), optionally clipped to
:math:`[-c, c]`. A group of one, or one whose rewards are all equal, carries no relative
signal and gets :math:`A_j = 0` exactly (verl passes a lone reward through as its advantage).

:func:`group_loss_weights` gives weights :math:`w_j = N/(G\,n_{g(j)})` so that every prompt weighs
the same in a sample-mean loss whatever its group size.
"""

from __future__ import annotations

import functools
import itertools
import operator
import struct
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from e3core._validation import check_choice, check_float

__all__ = [
    "BASELINES",
    "LOSS_WEIGHTINGS",
    "group_advantages",
    "group_codes",
    "group_loss_weights",
]

BASELINES = ("mean", "leave_one_out")
"""The ``baseline`` options of :func:`group_advantages` (settings and adapters import them)."""
LOSS_WEIGHTINGS = ("sample", "prompt")
"""The ``mode`` options of :func:`group_loss_weights` (settings and adapters import them)."""
_SCALES = ("std", "none")


_HASHED_TYPES = (str, bytes, int)
_PACK_INT64 = struct.Struct("=q").pack


def _hashed_codes(ids: np.ndarray, sort: bool) -> tuple[np.ndarray, int] | None:
    """Codes of string (or bytes, or Python int) labels through one dict pass, or ``None``.

    Each label is looked up in a ``defaultdict`` that numbers a new label on first sight, in
    one C-level pass (``operator.itemgetter``; the codes are joined as bytes) instead of
    ``np.unique``'s object sort with Python comparisons (~25x faster for verl's uid strings at
    262k samples). With ``sort`` the first-seen numbers are renumbered by the sorted distinct
    labels, giving exactly the codes of ``np.unique(ids, return_inverse=True)``; without, codes
    are in first-seen order (the grouping, and so every advantage and weight, is the same; only
    :func:`group_codes` shows codes and it sorts). Only when every distinct label
    is exactly a ``str``, ``bytes`` or ``int`` (hash, ``==`` and ``<`` agree: a total order);
    for anything else (mixed, unhashable, bool, float objects) ``None``, and the caller's
    ``np.unique`` decides and raises as before.
    """
    labels = ids.tolist()
    # A new label gets the next number as 8 native bytes, so the codes are one bytes join.
    index: defaultdict[Any, bytes] = defaultdict(
        functools.partial(next, map(_PACK_INT64, itertools.count()))
    )
    try:
        found = operator.itemgetter(*labels)(index) if len(labels) > 1 else (index[labels[0]],)
    except Exception:  # unhashable, or a label whose hash/== raises: np.unique decides
        return None
    keys = list(index)
    kind = type(keys[0])
    if kind not in _HASHED_TYPES or any(type(k) is not kind for k in keys):
        return None
    codes = np.frombuffer(bytearray().join(found), dtype=np.int64)  # writable
    if sort:
        rank = np.empty(len(keys), dtype=np.int64)
        rank[sorted(range(len(keys)), key=keys.__getitem__)] = np.arange(len(keys))
        codes = rank[codes]
    return codes, len(keys)


def _np_codes(group_ids: Any, length: int, sort: bool = True) -> tuple[np.ndarray, int]:
    ids = group_ids if isinstance(group_ids, np.ndarray) else np.asarray(group_ids)
    if ids.ndim != 1 or len(ids) != length:
        raise ValueError(
            f"group_ids must be one-dimensional with the length of rewards ({length}), "
            f"got shape {ids.shape}"
        )
    if length == 0:  # np.asarray([]) is float64: no labels, nothing to check
        return np.zeros(0, dtype=np.int64), 0
    if ids.dtype.kind == "b":  # two labels, as for a torch bool tensor
        ids = ids.astype(np.int64)
    if ids.dtype.kind in "iu":
        lo, hi = int(ids.min()), int(ids.max())
        if lo >= 0 and hi < 2 * length + 1024:
            return ids.astype(np.int64, copy=False), hi + 1
    if ids.dtype.kind in "fc":
        raise TypeError(
            f"group_ids must be integers or hashable labels (not floats), got dtype {ids.dtype}"
        )
    if ids.dtype.kind in "OUS":
        fast = _hashed_codes(ids, sort)
        if fast is not None:
            return fast
    try:
        uniq, inverse = np.unique(ids, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"group_ids must be comparable labels: {exc}") from exc
    return inverse.astype(np.int64).reshape(-1), len(uniq)


def _torch_codes(group_ids: Any, length: int, device: torch.device) -> tuple[torch.Tensor, int]:
    if isinstance(group_ids, torch.Tensor):
        if group_ids.dim() != 1 or group_ids.numel() != length:
            raise ValueError(
                f"group_ids must be one-dimensional with the length of rewards ({length}), "
                f"got shape {tuple(group_ids.shape)}"
            )
        if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex:
            raise TypeError(f"group_ids must be an integer (or bool) tensor, got {group_ids.dtype}")
        ids = group_ids.to(device=device, dtype=torch.int64)
        if length == 0:
            return ids, 0
        lo, hi = torch.aminmax(ids)
        lo_i, hi_i = int(lo), int(hi)
        if lo_i >= 0 and hi_i < 2 * length + 1024:
            return ids, hi_i + 1
        uniq, inverse = torch.unique(ids, return_inverse=True)
        return inverse, int(uniq.numel())
    codes, num = _np_codes(group_ids, length, sort=False)
    return torch.as_tensor(codes, device=device), num


def group_codes(group_ids: Any) -> tuple[np.ndarray, int]:
    """Dense codes ``0..G-1`` for any group labels (ints, strings, uuids), and ``G``.

    Non-negative integer ids of moderate range are kept as they are (unused ids are empty
    groups); anything else is mapped through its sorted unique values.
    """
    arr = group_ids if isinstance(group_ids, np.ndarray) else np.asarray(group_ids)
    return _np_codes(arr, len(arr))


def _check_common(baseline: str, scale: str, eps: Any, clip: Any) -> tuple[float, float | None]:
    check_choice("baseline", baseline, BASELINES)
    check_choice("scale", scale, _SCALES)
    eps_f = check_float("eps", eps, low=0.0)
    clip_f = None if clip is None else check_float("clip", clip, low=0.0, low_open=True)
    return eps_f, clip_f


def _torch_advantages(
    rewards: torch.Tensor,
    group_ids: Any,
    baseline: str,
    scale: str,
    eps: float,
    clip: float | None,
) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one-dimensional, got shape {tuple(rewards.shape)}")
    if not rewards.dtype.is_floating_point:
        raise TypeError(f"rewards must be a floating-point tensor, got {rewards.dtype}")
    n = rewards.numel()
    codes, num_groups = _torch_codes(group_ids, n, rewards.device)
    if n == 0:
        return rewards.clone()
    acc = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.detach().to(acc)
    if not bool(torch.isfinite(r).all()):
        bad = int(torch.nonzero(~torch.isfinite(r))[0])
        raise ValueError(f"rewards must be finite, got {float(r[bad])} at index {bad}")
    count = torch.bincount(codes, minlength=num_groups).to(acc)
    total = torch.zeros(num_groups, dtype=acc, device=r.device).index_add_(0, codes, r)
    mean = total / count.clamp(min=1)
    centred = r - mean[codes]
    # A group is flat (one member, or all rewards equal) when no member differs from some
    # member's reward; an unaccumulated scatter leaves one member's value per group.
    some = torch.zeros(num_groups, dtype=acc, device=r.device).index_put_((codes,), r)
    differs = torch.bincount(codes, weights=(r != some[codes]).to(acc), minlength=num_groups)
    flat = (differs == 0)[codes]
    n_j = count[codes]
    adv = centred * (n_j / (n_j - 1).clamp(min=1)) if baseline == "leave_one_out" else centred
    if scale == "std":
        sq = torch.zeros(num_groups, dtype=acc, device=r.device).index_add_(0, codes, centred**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()
        adv = adv / (std[codes] + eps)
    adv = adv.masked_fill(flat, 0.0)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    return adv.to(rewards.dtype)


def _numpy_advantages(
    rewards: np.ndarray,
    group_ids: Any,
    baseline: str,
    scale: str,
    eps: float,
    clip: float | None,
) -> np.ndarray:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be one-dimensional, got shape {rewards.shape}")
    if rewards.dtype.kind != "f":
        raise TypeError(
            f"rewards must be a floating-point array, got dtype {rewards.dtype} "
            "(convert with rewards.astype(float))"
        )
    n = len(rewards)
    codes, num_groups = _np_codes(group_ids, n, sort=False)
    if n == 0:
        return rewards.copy()
    r = rewards.astype(np.float64, copy=False)
    finite = np.isfinite(r)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"rewards must be finite, got {r[bad]} at index {bad}")
    count = np.bincount(codes, minlength=num_groups).astype(np.float64)
    mean = np.bincount(codes, weights=r, minlength=num_groups) / np.maximum(count, 1)
    centred = r - mean[codes]
    # Flat groups (one member, or all rewards equal): no member differs from some member's
    # reward (fancy assignment with repeated indices keeps one of them).
    some = np.zeros(num_groups)
    some[codes] = r
    differs = np.bincount(codes, weights=r != some[codes], minlength=num_groups)
    flat = (differs == 0)[codes]
    if baseline == "leave_one_out":
        n_j = count[codes]
        adv = centred * (n_j / np.maximum(n_j - 1, 1))
    else:
        adv = centred
    if scale == "std":
        sq = np.bincount(codes, weights=centred * centred, minlength=num_groups)
        std = np.sqrt(sq / np.maximum(count - 1, 1))
        adv = adv / (std[codes] + eps)
    adv[flat] = 0.0
    if clip is not None:
        np.clip(adv, -clip, clip, out=adv)
    return adv.astype(rewards.dtype, copy=False)


def group_advantages(
    rewards: Any,
    group_ids: Any,
    *,
    baseline: str = "mean",
    scale: str = "std",
    eps: float = 1e-6,
    clip: float | None = None,
) -> Any:
    r"""Advantages of completions grouped by prompt, for groups of any sizes in any order.

    .. math:: A_j = \mathrm{clip}_c\Bigl(\frac{r_j - b_j}{\sigma_{g(j)} + \epsilon}\Bigr),\qquad
              A_j = 0 \text{ if } n_{g(j)} = 1 \text{ or } \max_g r = \min_g r

    (see the module docstring; GRPO's group normalisation generalised to the uneven groups that
    E3's dynamic allocation produces, arXiv 2505.18573). With equal groups and ``baseline="mean"``,
    ``scale="std"`` it equals TRL's and verl's GRPO advantage for the same ``eps``.

    Args:
        rewards: 1-D float ``torch.Tensor`` (any device) or ``numpy.ndarray``; must be finite.
        group_ids: Group label per completion: an integer tensor or array (any values), or any
            sortable labels (e.g. verl's uid strings). Same length as ``rewards``.
        baseline: ``"mean"`` (GRPO) or ``"leave_one_out"`` (RLOO).
        scale: ``"std"`` (divide by the unbiased group std plus ``eps``) or ``"none"``.
        eps: :math:`\epsilon \ge 0` added to the std.
        clip: Optional :math:`c > 0`; advantages are clipped to :math:`[-c, c]` (Knapsack RL
            clips at 5: a lone success in a large group otherwise gets about :math:`\sqrt{n}`).

    Returns:
        Advantages of the same type, dtype, device and shape as ``rewards``, not attached to the
        autograd graph. Accumulation is in fp32 (fp64 for fp64 input on torch; fp64 on numpy).

    Raises:
        ValueError: non-finite rewards, wrong shapes, unknown ``baseline``/``scale``, bad
            ``eps``/``clip``.
        TypeError: non-float rewards or float group ids.
    """
    eps_f, clip_f = _check_common(baseline, scale, eps, clip)
    if isinstance(rewards, torch.Tensor):
        return _torch_advantages(rewards, group_ids, baseline, scale, eps_f, clip_f)
    if isinstance(rewards, np.ndarray):
        return _numpy_advantages(rewards, group_ids, baseline, scale, eps_f, clip_f)
    raise TypeError(
        f"rewards must be a torch.Tensor or numpy.ndarray, got {type(rewards).__name__}"
    )


def group_loss_weights(group_ids: Any, mode: str = "sample") -> Any:
    r"""Per-completion loss weights, normalised to mean 1.

    ``"sample"``: :math:`w_j = 1` (every completion counts once, so a prompt with more rollouts
    weighs more). ``"prompt"``: :math:`w_j = N / (G\, n_{g(j)})` for :math:`N` completions in
    :math:`G` non-empty groups, so every prompt's completions sum to :math:`N/G` and a
    sample-mean loss :math:`\frac1N\sum_j w_j L_j` weighs prompts equally whatever their counts.
    Multiply each sequence's loss (or each of its tokens') by its weight.

    Args:
        group_ids: Group label per completion (integer tensor, array or list of labels).
        mode: ``"sample"`` or ``"prompt"``.

    Returns:
        A float32 tensor on ``group_ids``' device for tensor input, else a float64 array.
    """
    check_choice("mode", mode, LOSS_WEIGHTINGS)
    if isinstance(group_ids, torch.Tensor):
        n = group_ids.numel()
        codes, num = _torch_codes(group_ids, n, group_ids.device)
        if mode == "sample" or n == 0:
            return torch.ones(n, dtype=torch.float32, device=group_ids.device)
        count = torch.bincount(codes, minlength=num)
        groups = int((count > 0).sum())
        return (n / (groups * count[codes].to(torch.float64))).to(torch.float32)
    arr = group_ids if isinstance(group_ids, np.ndarray) else np.asarray(group_ids)
    n = len(arr)
    codes, num = _np_codes(arr, n, sort=False)
    if mode == "sample" or n == 0:
        return np.ones(n)
    count = np.bincount(codes, minlength=num)
    return n / (np.count_nonzero(count) * count[codes].astype(np.float64))
