r"""CPU timings of e3core's core pieces, each beside a peer implementation in the same run.

Three parts, one table (median wall time per call, timeit-style: calls are looped until a
repeat lasts at least ``--min-time`` seconds, ``--repeats`` repeats, median per call):

* ``advantages``: :func:`e3core.group_advantages` on 262,144 binary rewards (torch CPU float32
  and numpy) in groups of random sizes 2..32, contiguous and shuffled, against
  (a) the fixed-group reshape TRL uses (``rewards.view(-1, G)``, mean, unbiased std,
  ``(r - mean) / (std + eps)``) at ``G = 8`` on the same total, the speed floor that cannot do
  variable groups, and (b) verl's per-sample loop (``compute_grpo_outcome_advantage``: a dict
  from uid to a list of scores, ``torch.mean`` / ``torch.std`` per uid, then a loop over samples;
  a size-1 group passes its raw reward), written in ``peers.py`` from that description. The loop
  is timed on a prefix of whole groups and scaled linearly to the full size (the table says so).
  Results are checked equal: against (b) on the same groups (all of size >= 2), against (a) on
  equal groups of 8, with the same ``eps``.
* ``tracker``: :class:`e3core.BetaDifficultyTracker` ``update`` (repeat ids and first-time
  insertion), ``posterior`` of a 4096-id batch and ``fit_prior`` at 10k, 100k and 1M tracked
  prompts, beside a per-prompt Python dict of Beta parameters (MoPPS-style bookkeeping).
* ``allocation``: every allocator on batches of 256, 1024 and 4096 prompts (bounds 2..64, 8 per
  prompt on average) under a Beta and a grid posterior, beside Knapsack RL's point-estimate
  knapsack (the peer rule, as written in ``benchmarks/peers.py``).

Run ``python benchmarks/bench_core.py`` (about 1-2 minutes on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import OUT_DIR, median_seconds, median_seconds_interleaved, print_table, write_csv
from peers import DictBetaTracker, PointKnapsack, trl_reshape_advantages, verl_loop_advantages

from e3core import (
    BetaDifficultyTracker,
    Budget,
    KnapsackAllocator,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
    group_advantages,
)

EPS = 1e-6


# ------------------------------------------------------------------------ rows
def _row(
    part: str,
    case: str,
    size: int,
    seconds: float,
    ref: str = "",
    ratio: float = float("nan"),
    note: str = "",
) -> dict[str, Any]:
    """One table and CSV row: ``ratio`` compares ``seconds`` with the row named by ``ref``."""
    return {
        "part": part,
        "case": case,
        "size": size,
        "seconds": seconds,
        "ref": ref,
        "ratio": ratio,
        "note": note,
    }


# ------------------------------------------------------------------ advantages
def make_groups(total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Group ids of random sizes 2..32 covering ``total`` samples, and binary rewards.

    Each group has its own success rate drawn uniformly, so flat and mixed groups both occur.
    The last group is trimmed to fit (and merged into the previous one if that left it at 1).
    """
    sizes = rng.integers(2, 33, size=total // 2 + 1)
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, total))
    sizes = sizes[: k + 1].copy()
    sizes[-1] -= int(ends[k]) - total
    if sizes[-1] < 2:
        sizes[-2] += sizes[-1]
        sizes = sizes[:-1]
    gid = np.repeat(np.arange(len(sizes)), sizes)
    p = rng.random(len(sizes))[gid]
    rewards = (rng.random(total) < p).astype(np.float32)
    return gid, rewards


def advantages_part(
    n: int, loop_n: int, repeats: int, min_time: float, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time ``group_advantages`` against TRL's reshape and verl's loop; check equality."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    gid, rew = make_groups(n, rng)
    perm = rng.permutation(n)
    gid_sh, rew_sh = gid[perm], rew[perm]
    t_rew, t_gid = torch.from_numpy(rew), torch.from_numpy(gid)
    t_rew_sh, t_gid_sh = torch.from_numpy(rew_sh), torch.from_numpy(gid_sh)
    uids_sh = np.array([f"uid-{g:07d}" for g in gid_sh], dtype=object)
    t_eq = torch.from_numpy((rng.random(n) < 0.5).astype(np.float32))
    gid_eq = torch.arange(n) // 8

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("ours torch f32, equal groups of 8", lambda: group_advantages(t_eq, gid_eq, eps=EPS)),
        ("ours torch f32, sizes 2..32 contiguous", lambda: group_advantages(t_rew, t_gid)),
        ("ours torch f32, sizes 2..32 shuffled", lambda: group_advantages(t_rew_sh, t_gid_sh)),
        ("ours numpy f32, sizes 2..32 contiguous", lambda: group_advantages(rew, gid)),
        ("ours numpy f32, sizes 2..32 shuffled", lambda: group_advantages(rew_sh, gid_sh)),
        ("ours numpy f32, shuffled uid strings", lambda: group_advantages(rew_sh, uids_sh)),
    ]
    # verl's loop on a prefix of whole groups (shuffled order within it), scaled linearly
    prefix_groups = int(gid[min(loop_n, n) - 1])
    sub = gid_sh < prefix_groups if loop_n < n else np.ones(n, dtype=bool)
    sub_n = int(sub.sum())
    sub_rew = torch.from_numpy(rew_sh[sub])
    sub_uids = [str(u) for u in uids_sh[sub]]
    loop_time = median_seconds(
        lambda: verl_loop_advantages(sub_rew, sub_uids, EPS), max(1, repeats // 2), 0.0
    )
    t_verl = loop_time * n / sub_n
    seconds = median_seconds_interleaved(
        [lambda: trl_reshape_advantages(t_eq, 8, EPS)] + [fn for _, fn in cases],
        repeats,
        min_time,
    )
    t_trl = seconds[0]
    part = "advantages"
    floor_note = "speed floor; equal groups only"
    rows.append(
        _row(part, "(a) TRL reshape view(-1, 8), torch f32", n, t_trl, "(a)", 1.0, floor_note)
    )
    scaled = "" if sub_n == n else f"timed on {sub_n:,} samples, scaled x{n / sub_n:.2f}"
    rows.append(_row(part, "(b) verl per-sample loop, torch f32", n, t_verl, "(b)", 1.0, scaled))
    for (label, _), sec in zip(cases, seconds[1:], strict=True):
        note = f"(b)/ours = {t_verl / sec:,.0f}x"
        rows.append(_row(part, label, n, sec, "ours/(a)", sec / t_trl, note))
    # equality checks
    ours_eq = group_advantages(t_eq, gid_eq, eps=EPS)
    diff_a = float((ours_eq - trl_reshape_advantages(t_eq, 8, EPS)).abs().max())
    ref_b = verl_loop_advantages(sub_rew, sub_uids, EPS)
    ours_b = group_advantages(sub_rew, torch.from_numpy(gid_sh[sub]), eps=EPS)
    ours_b_np = group_advantages(rew_sh[sub], uids_sh[sub], eps=EPS)
    diff_b = float((ours_b - ref_b).abs().max())
    diff_b_np = float(np.abs(ours_b_np - ref_b.numpy()).max())
    scale = float(ref_b.abs().max())
    notes.append(
        f"equality: max |ours - (a)| = {diff_a:.2e} on equal groups of 8; max |ours - (b)| = "
        f"{diff_b:.2e} (torch), {diff_b_np:.2e} (numpy, uid strings) over {sub_n:,} shuffled "
        f"samples, groups 2..32 (max |A| = {scale:.2f}); eps = {EPS:g} for all"
    )
    ok = max(diff_a, diff_b, diff_b_np) <= 1e-5 * max(1.0, scale)
    notes.append(f"equal results: {'yes' if ok else 'NO'} (tolerance 1e-5 relative, float32)")
    return rows, notes


# --------------------------------------------------------------------- tracker
def filled_tracker(n: int, rng: np.random.Generator) -> BetaDifficultyTracker:
    """A tracker with ``n`` prompts, 8..24 integer trials each, U-shaped success rates."""
    tracker = BetaDifficultyTracker()
    trials = 8.0 * rng.integers(1, 4, size=n)
    p = rng.beta(0.3, 0.3, size=n)
    tracker.update(np.arange(n), rng.binomial(trials.astype(np.int64), p), trials)
    return tracker


def tracker_part(
    sizes: list[int], repeats: int, min_time: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Time tracker updates, batch posteriors and prior fits at several sizes."""
    rows: list[dict[str, Any]] = []

    def add(case: str, size: int, sec: float, ref: str = "", ratio: float = float("nan")) -> None:
        rows.append(_row("tracker", case, size, sec, ref, ratio))

    for n in sizes:
        distinct = max(n // 10, 1)
        ids = rng.integers(0, distinct, size=n)
        trials = np.full(n, 8.0)
        succ = rng.binomial(8, 0.4, size=n).astype(np.float64)
        base = filled_tracker(distinct, rng)

        def update_repeat(
            t: BetaDifficultyTracker = base,
            i: np.ndarray = ids,
            s: np.ndarray = succ,
            tr: np.ndarray = trials,
        ) -> None:
            t.update(i, s, tr)

        sec = median_seconds(update_repeat, repeats, min_time)
        peer = DictBetaTracker()
        peer.update(np.arange(distinct), np.zeros(distinct), np.zeros(distinct))
        peer_sec = median_seconds(
            lambda p=peer, i=ids, s=succ, tr=trials: p.update(i, s, tr), 3, 0.0
        )
        add(f"update: {n:,} obs over {distinct:,} known ids", n, sec, "dict/ours", peer_sec / sec)

        fresh = np.arange(n, dtype=np.int64) + 10**9

        def insert(i: np.ndarray = fresh, s: np.ndarray = succ, tr: np.ndarray = trials) -> None:
            BetaDifficultyTracker().update(i, s, tr)

        def insert_peer(
            i: np.ndarray = fresh, s: np.ndarray = succ, tr: np.ndarray = trials
        ) -> None:
            DictBetaTracker().update(i, s, tr)

        sec = median_seconds(insert, max(3, repeats // 2), 0.0)
        peer_sec = median_seconds(insert_peer, 3, 0.0)
        add(f"update: {n:,} new ids (first insertion)", n, sec, "dict/ours", peer_sec / sec)

        tracked = filled_tracker(n, rng)
        batch = rng.choice(n, size=min(4096, n), replace=False)
        sec = median_seconds(lambda t=tracked, b=batch: t.posterior(b), repeats, min_time)
        dict_peer = DictBetaTracker()
        dict_peer.update(np.arange(n), np.zeros(n), np.full(n, 8.0))
        peer_sec = median_seconds(lambda p=dict_peer, b=batch: p.posterior(b), repeats, min_time)
        add(f"posterior (Beta) of 4,096 ids, {n:,} tracked", n, sec, "dict/ours", peer_sec / sec)
        sec = median_seconds(lambda t=tracked: t.fit_prior("beta"), max(3, repeats // 2), 0.0)
        add(f"fit_prior('beta'), {n:,} tracked", n, sec)
        sec = median_seconds(lambda t=tracked: t.fit_prior("grid"), max(3, repeats // 2), 0.0)
        add(f"fit_prior('grid', 101 pts), {n:,} tracked", n, sec)
        sec = median_seconds(lambda t=tracked, b=batch: t.posterior(b), repeats, min_time)
        add(f"posterior (grid) of 4,096 ids, {n:,} tracked", n, sec)

    # decayed (fractional) counts: many distinct (s, f) pairs for the fits
    n = min(sizes[-1], 100_000)
    decayed = BetaDifficultyTracker(decay=0.9)
    for _ in range(3):
        decayed.update(np.arange(n), rng.binomial(8, rng.random(n)), np.full(n, 8.0))
    sec = median_seconds(lambda: decayed.fit_prior("grid"), 3, 0.0)
    add(f"fit_prior('grid'), {n:,} tracked, decay 0.9 (fractional counts)", n, sec)
    return rows


# ------------------------------------------------------------------ allocation
def allocation_part(
    batches: list[int], repeats: int, min_time: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Time every allocator per batch size under Beta and grid posteriors."""
    rows: list[dict[str, Any]] = []
    tracked = filled_tracker(100_000, rng)
    grid_tracked = filled_tracker(100_000, np.random.default_rng(1))
    grid_tracked.fit_prior("grid")
    allocators: list[tuple[str, Any]] = [
        ("uniform", UniformAllocator()),
        ("rank (E3)", RankAllocator()),
        ("knapsack mixed", KnapsackAllocator("mixed")),
        ("knapsack info_gain", KnapsackAllocator("info_gain")),
        ("thompson mixed", ThompsonAllocator("mixed")),
    ]
    for b in batches:
        ids = rng.choice(100_000, size=b, replace=False)
        budget = Budget(8 * b, 2, 64)
        posts = {"Beta": tracked.posterior(ids), "grid": grid_tracked.posterior(ids)}
        peer = PointKnapsack("info", 100_000)
        peer.last[:] = tracked.mean(np.arange(100_000))
        peer.last[rng.random(100_000) < 0.3] = 0.0  # as if last groups were all wrong
        peer_sec = median_seconds(
            lambda pk=peer, i=ids, bud=budget: pk.plan(i, bud), repeats, min_time
        )
        case = f"Knapsack RL point knapsack (peer), B={b}"
        rows.append(_row("allocation", case, b, peer_sec, note="p-hat = last group rate"))
        for kind, post in posts.items():
            for name, alloc in allocators:
                gen = np.random.default_rng(0)

                def run(a: Any = alloc, p: Any = post, bud: Budget = budget, g: Any = gen) -> None:
                    a.allocate(p, bud, rng=g)

                sec = median_seconds(run, repeats, min_time)
                case = f"{name}, {kind} posterior, B={b}"
                rows.append(_row("allocation", case, b, sec, "ours/peer", sec / peer_sec))
    return rows


# ------------------------------------------------------------------------ main
def _fmt_time(sec: float) -> str:
    if sec >= 1.0:
        return f"{sec:.2f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec * 1e6:.1f} us"


def main(argv: list[str] | None = None) -> int:
    """Run the three parts, print one table, write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the CSV")
    parser.add_argument("--samples", type=int, default=262_144, help="advantage batch size")
    parser.add_argument(
        "--loop-samples", type=int, default=32_768, help="prefix on which verl's loop is timed"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per repeat")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine two OpenMP threads "
        "stall at barriers whenever another process holds a core, adding ~10 ms per op)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test (< 30 s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [10_000, 100_000, 1_000_000]
    batches = [256, 1024, 4096]
    if args.quick:
        args.samples, args.loop_samples = 65_536, 4_096
        args.repeats, args.min_time = 3, 0.01
        sizes, batches = [10_000, 100_000], [256, 1024]
    rng = np.random.default_rng(20250518)
    torch.manual_seed(0)

    adv_rows, notes = advantages_part(
        args.samples, args.loop_samples, args.repeats, args.min_time, rng
    )
    rows = adv_rows
    rows += tracker_part(sizes, args.repeats, args.min_time, rng)
    rows += allocation_part(batches, args.repeats, args.min_time, rng)

    print(
        f"bench_core: torch {torch.__version__} ({torch.get_num_threads()} threads), numpy "
        f"{np.__version__}; median per call over {args.repeats} repeats"
    )
    table = []
    for row in rows:
        ratio = "" if np.isnan(row["ratio"]) or not row["ref"] else f"{row['ratio']:.2f}"
        size, median = f"{row['size']:,}", _fmt_time(row["seconds"])
        table.append([row["part"], row["case"], size, median, row["ref"], ratio, row["note"]])
    print_table(["part", "case", "size", "median", "vs", "ratio", "note"], table)
    for note in notes:
        print(note)
    by_case = {r["case"]: r for r in rows}
    floor = by_case["(a) TRL reshape view(-1, 8), torch f32"]["seconds"]
    loop = by_case["(b) verl per-sample loop, torch f32"]["seconds"]
    ours = by_case["ours torch f32, sizes 2..32 shuffled"]["seconds"]
    print(
        f"targets (torch f32, shuffled 2..32): ours/(a) = {ours / floor:.2f} (target <= 1.5: "
        f"{'met' if ours / floor <= 1.5 else 'MISSED'}); (b)/ours = {loop / ours:,.0f} "
        f"(target >= 200: {'met' if loop / ours >= 200 else 'MISSED'})"
    )
    path = write_csv(rows, args.out / "bench_core.csv")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
