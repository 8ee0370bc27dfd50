r"""Evaluation metrics: the unbiased pass@k estimator.

A prompt sampled :math:`n` times with :math:`c` correct completions has the unbiased estimate of
the probability that at least one of :math:`k` fresh samples is correct (Chen et al. 2021,
arXiv 2107.03374)

.. math::
    \widehat{\text{pass@}k} = 1 - \frac{\binom{n-c}{k}}{\binom{n}{k}}, \qquad
    0 \le c \le n,\ 1 \le k \le n,

which is exactly 1 when :math:`n - c < k`. The ratio of binomials is a product with
:math:`\min(c, k)` factors,

.. math::
    \frac{\binom{n-c}{k}}{\binom{n}{k}}
    = \prod_{i=n-c+1}^{n} \Bigl(1 - \frac{k}{i}\Bigr)
    = \prod_{j=0}^{k-1} \Bigl(1 - \frac{c}{n-j}\Bigr),

which :func:`pass_at_k` sums in log space (``log1p``) over the shorter of the two ranges and
returns through ``expm1``, so it neither overflows nor loses digits for large :math:`n`. E3
(Liao et al., arXiv 2505.18573) reports pass@1 and pass@k on held-out problems in this way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from e3core._validation import _show

__all__ = ["mean_pass_at_k", "pass_at_k"]

# Elements are processed in chunks holding at most this many log-factors at once.
_CHUNK_TERMS = 1 << 20


def _as_int_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as an int64 array, or raise naming ``name``."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an array of integers, got {_show(value)}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first ``True`` in ``mask``."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def pass_at_k(num_samples: Any, num_correct: Any, k: Any) -> np.ndarray:
    r"""Unbiased pass@k per prompt from :math:`n` samples with :math:`c` correct.

    Computes :math:`1 - \binom{n-c}{k} / \binom{n}{k}` (Chen et al. 2021, arXiv 2107.03374) as
    :math:`-\operatorname{expm1}\bigl(\sum \log(1 - c/(n-j))\bigr)` over :math:`j < k`, or the
    equal sum of :math:`\log(1 - k/i)` over :math:`n-c < i \le n`, whichever has fewer terms.
    Exact to about :math:`10^{-15}` relative per factor (so ~1e-12 for :math:`n = 10^4`), no
    overflow; exactly 0 when :math:`c = 0` and exactly 1 when :math:`n - c < k`.

    Args:
        num_samples: :math:`n`, samples drawn per prompt; an integer or integer array.
        num_correct: :math:`c`, correct samples per prompt, :math:`0 \le c \le n`; broadcastable
            with ``num_samples``.
        k: the :math:`k` of pass@k, :math:`1 \le k \le n`; an integer or an integer array
            broadcastable with the others.

    Returns:
        A float64 array of the broadcast shape (0-d for scalar inputs) with values in [0, 1].

    Raises:
        TypeError: if an argument is not integer-valued.
        ValueError: if the shapes do not broadcast, or :math:`c < 0`, :math:`c > n`,
            :math:`k < 1` or :math:`k > n` anywhere (the message names the argument, the first
            bad value and its index).
    """
    n_in = _as_int_array("num_samples", num_samples)
    c_in = _as_int_array("num_correct", num_correct)
    k_in = _as_int_array("k", k)
    try:
        n, c, kk = np.broadcast_arrays(n_in, c_in, k_in)
    except ValueError as exc:
        raise ValueError(
            "num_samples, num_correct and k must broadcast to one shape, got shapes "
            f"{n_in.shape}, {c_in.shape} and {k_in.shape}"
        ) from exc
    checks = (
        ("num_correct", c, c < 0, "must be >= 0"),
        ("num_correct", c, c > n, "must be <= num_samples"),
        ("k", kk, kk < 1, "must be >= 1"),
        ("k", kk, kk > n, "must be <= num_samples"),
    )
    for name, arr, bad, rule in checks:
        if bad.any():
            idx = _first_bad(bad)
            where = f" at index {idx}" if idx else ""
            extra = f" (num_samples={int(n[idx])})" if "num_samples" in rule else ""
            raise ValueError(f"{name} {rule}, got {int(arr[idx])}{where}{extra}")

    n, c, kk = n.ravel(), c.ravel(), kk.ravel()
    out = np.zeros(n.shape, dtype=np.float64)
    certain = n - c < kk
    out[certain] = 1.0
    todo = np.flatnonzero(~certain & (c > 0))
    if todo.size:
        # For each element, the shorter product: c factors (1 - k/i) or k factors (1 - c/(n-j)).
        tn, tc, tk = n[todo], c[todo], kk[todo]
        by_c = tc <= tk
        terms = np.where(by_c, tc, tk)
        log_ratio = np.empty(todo.size, dtype=np.float64)
        ends = np.cumsum(terms)
        start = 0
        while start < todo.size:
            base = int(ends[start - 1]) if start else 0
            stop = int(np.searchsorted(ends, base + _CHUNK_TERMS, side="right"))
            stop = max(stop, start + 1)
            sl = slice(start, stop)
            count = terms[sl]
            owner = np.repeat(np.arange(stop - start), count)
            offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
            sn, sc, sk, sb = tn[sl][owner], tc[sl][owner], tk[sl][owner], by_c[sl][owner]
            # by_c: i = n - c + 1 + offset, factor 1 - k/i; else j = offset, factor 1 - c/(n - j).
            num = np.where(sb, sk, sc).astype(np.float64)
            den = np.where(sb, sn - sc + 1 + offset, sn - offset).astype(np.float64)
            logs = np.log1p(-num / den)
            log_ratio[sl] = np.bincount(owner, weights=logs, minlength=stop - start)
            start = stop
        out[todo] = -np.expm1(log_ratio)
    return out.reshape(np.broadcast_shapes(n_in.shape, c_in.shape, k_in.shape))


def mean_pass_at_k(num_samples: Any, num_correct: Any, k: Any) -> float:
    """Mean of :func:`pass_at_k` over prompts (Chen et al. 2021, arXiv 2107.03374).

    Args:
        num_samples: samples per prompt, as for :func:`pass_at_k`.
        num_correct: correct samples per prompt, as for :func:`pass_at_k`.
        k: the :math:`k` of pass@k, as for :func:`pass_at_k`.

    Returns:
        The average estimate over all (broadcast) prompts, a Python float.

    Raises:
        ValueError: if there are no prompts, or as :func:`pass_at_k`.
    """
    values = pass_at_k(num_samples, num_correct, k)
    if values.size == 0:
        raise ValueError("num_samples must hold at least one prompt, got an empty array")
    return float(values.mean())
