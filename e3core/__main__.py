"""``python -m e3core``: the E3 loop on a simulated task, with no model and no framework.

Until a framework adapter is installed this is the quickest look at what e3core does: prompts with
a U-shaped spread of true success rates (many always or never solved, as real competition math),
three epochs of 64-prompt batches with 8 rollouts per prompt on average, plain GRPO's uniform
spend against :class:`e3core.E3Scheduler`'s default, and the share of prompts whose group holds
both a success and a failure (the groups that give GRPO a learning signal).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from e3core import E3Scheduler, UniformAllocator


def simulate(allocator: str, rates: np.ndarray, epochs: int, seed: int) -> list[float]:
    """Mixed-group share per epoch for ``allocator`` in ``{"uniform", "e3core"}``."""
    sched = E3Scheduler(
        allocator=UniformAllocator() if allocator == "uniform" else None,
        controller=None,
        rollouts_per_prompt=8,
        min_per_prompt=2,
        max_per_prompt=32,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(epochs):
        order = rng.permutation(len(rates))
        mixed = seen = 0
        for start in range(0, len(order) - 63, 64):
            ids = order[start : start + 64]
            plan = sched.plan(ids)
            groups = plan.group_ids
            rewards = (rng.random(plan.total) < rates[ids][groups]).astype(float)
            metrics = sched.observe(ids, rewards, groups)
            mixed += metrics["e3/mixed_share"] * len(ids)
            seen += len(ids)
        shares.append(mixed / seen)
    return shares


def main(argv: list[str] | None = None) -> None:
    """Run the simulation and print a table."""
    parser = argparse.ArgumentParser(prog="python -m e3core", description=__doc__)
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    kind = rng.choice(3, size=args.prompts, p=[0.3, 0.2, 0.5])
    rates = np.where(kind == 0, rng.beta(0.3, 6, args.prompts), rng.beta(0.8, 0.8, args.prompts))
    rates = np.where(kind == 1, rng.beta(8, 0.3, args.prompts), rates)
    start = time.perf_counter()
    uniform = simulate("uniform", rates, args.epochs, args.seed)
    ours = simulate("e3core", rates, args.epochs, args.seed)
    print(f"{args.prompts} simulated prompts, 64 per batch, 8 rollouts each on average (2..32)")
    print(f"{'epoch':>5} | {'uniform mixed share':>19} | {'e3core mixed share':>18} | gain")
    for epoch, (u, e) in enumerate(zip(uniform, ours, strict=True), start=1):
        print(f"{epoch:>5} | {u:>19.3f} | {e:>18.3f} | {e - u:+.3f}")
    print(f"({time.perf_counter() - start:.1f} s; see benchmarks/allocation_sim.py for real data)")


if __name__ == "__main__":
    main()
