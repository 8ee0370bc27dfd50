r"""E3 inside TRL on the embedded demo task: step-time overhead, and an A/B against plain GRPO.

Two parts, both on the demo's tiny Qwen2 (``e3core.adapters.trl.demo``) on CPU:

* ``overhead``: ``E3GRPOTrainer`` (knapsack allocation, PI temperature control) against TRL's
  own ``GRPOTrainer`` at the same total rollouts per step, from the same warm-started weights,
  runs interleaved (plain, E3, plain, E3, ...). Reported: the median step time of each (TRL's
  ``train_runtime / max_steps``) and their ratio, which also carries the effect of E3 on what is
  generated (other prompts get more samples, the temperature moves); and, exactly, the time
  E3 itself adds per step (the adapter's work around TRL's generation and scoring: gathering,
  planning, the broadcast, re-expanding rows, advantages and metrics, tracker updates), timed
  inside the trainer, as a share of the step.
* ``ab``: E3 (the demo's defaults) against ``e3_enabled=False`` (plain GRPO: every prompt gets
  ``num_generations`` completions at the fixed temperature), same rollouts, same steps, same
  warm-started weights, seeds 0..S-1. After training: held-out pass@1 and pass@k per
  difficulty bucket (``k`` samples per prompt at T=1), and the entropy and temperature curves.
  Both parts train on ``--train-prompts`` (400) prompts, so in 200 steps of 8 prompts each prompt
  comes back about four times: E3's per-prompt posteriors only differ from the prior for
  prompts it has seen (in a single pass, every prompt is at the prior and the allocation is
  uniform). The warm start is a fixed number of steps (1,300, seed 42), so both arms start from
  the same policy on any machine.

Writes ``benchmarks/out/trl_overhead.csv``, ``trl_ab.csv`` (one row per arm, seed and bucket),
``trl_ab_curves.csv`` (per step) and ``trl_ab.png``. Run ``python benchmarks/bench_trl.py``
(about 10 minutes on 2 idle cores with the defaults) or ``--quick`` (a few minutes).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import OUT_DIR, print_table, pyplot, write_csv
from trl import GRPOConfig, GRPOTrainer

from e3core.adapters.trl import E3GRPOConfig, E3GRPOTrainer, demo
from e3core.adapters.trl.cli import DEMO_DEFAULTS
from e3core.adapters.trl.rewards import exact_reward


class TimedE3(E3GRPOTrainer):
    """E3GRPOTrainer that measures the time spent in its own code around TRL's step."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.e3_seconds = 0.0
        self._inner = 0.0

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._inner = 0.0
        start = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        self.e3_seconds += time.perf_counter() - start - self._inner
        return out


def _patch_timed() -> None:
    """Route E3GRPOTrainer's call of TRL's step through TimedE3._call_trl (timing only)."""
    original = GRPOTrainer._generate_and_score_completions

    def routed(self, inputs):  # type: ignore[no-untyped-def]
        if isinstance(self, TimedE3) and self.model.training:
            start = time.perf_counter()
            out = original(self, inputs)
            self._inner += time.perf_counter() - start
            return out
        return original(self, inputs)

    GRPOTrainer._generate_and_score_completions = routed  # type: ignore[method-assign]


LEARNING_RATE = DEMO_DEFAULTS["learning_rate"]


def _settings(steps: int, seed: int, out: str) -> dict[str, Any]:
    return {
        "output_dir": out,
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": 64,
        "num_generations": 8,
        "max_completion_length": 6,
        "learning_rate": LEARNING_RATE,
        "beta": 0.0,
        "max_steps": steps,
        "logging_steps": max(1, steps),
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": seed,
    }


def _train(
    kind: str, state: dict[str, Any], tokenizer: Any, dataset: Any, steps: int, seed: int
) -> tuple[Any, float]:
    model = demo.build_model(tokenizer, seed=0)
    model.load_state_dict(copy.deepcopy(state))
    with tempfile.TemporaryDirectory() as tmp:
        common = {
            "model": model,
            "processing_class": tokenizer,
            "reward_funcs": exact_reward,
            "train_dataset": dataset,
        }
        if kind == "plain":
            trainer: Any = GRPOTrainer(args=GRPOConfig(**_settings(steps, seed, tmp)), **common)
        else:
            args = E3GRPOConfig(
                **_settings(steps, seed, tmp),
                e3_enabled=kind != "uniform",
                e3_warmup_steps=DEMO_DEFAULTS["e3_warmup_steps"],
            )
            trainer = TimedE3(args=args, **common)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return trainer, seconds


def overhead(
    state: dict[str, Any], tokenizer: Any, dataset: Any, steps: int, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for r in range(repeats):
        for kind in ("plain", "e3"):
            trainer, seconds = _train(kind, state, tokenizer, dataset, steps, seed=r)
            e3_own = getattr(trainer, "e3_seconds", 0.0)
            rows.append(
                {
                    "repeat": r,
                    "trainer": kind,
                    "steps": steps,
                    "seconds": seconds,
                    "step_ms": 1e3 * seconds / steps,
                    "e3_own_ms": 1e3 * e3_own / steps,
                }
            )
            print(
                f"  overhead repeat {r} {kind:5s}: {1e3 * seconds / steps:7.1f} ms/step, "
                f"E3's own work {1e3 * e3_own / steps:5.2f} ms/step"
            )
    return rows


def ab(
    state: dict[str, Any],
    tokenizer: Any,
    dataset: Any,
    held_out: Any,
    steps: int,
    seeds: int,
    k: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    model = demo.build_model(tokenizer, seed=0)
    model.load_state_dict(copy.deepcopy(state))
    start = demo.evaluate(model, tokenizer, held_out, k=k, seed=1234)
    for row in demo.summarize(start.buckets, start.num_samples, start.num_correct, ks=(1, k)):
        rows.append({"arm": "start", "seed": -1, **row})
    for seed in range(seeds):
        for arm in ("e3", "uniform"):
            trainer, seconds = _train(arm, state, tokenizer, dataset, steps, seed)
            trained = trainer.accelerator.unwrap_model(trainer.model)
            result = demo.evaluate(trained, tokenizer, held_out, k=k, seed=1234)
            summary = demo.summarize(result.buckets, result.num_samples, result.num_correct, (1, k))
            for row in summary:
                rows.append({"arm": arm, "seed": seed, **row})
            for i, h in enumerate(trainer.e3_history):
                curves.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "step": i + 1,
                        "temperature": h.get("e3/sample_temperature"),
                        "entropy": h.get("e3/entropy"),
                        "reward": h.get("reward"),
                        "mixed_share": h.get("e3/mixed_share"),
                        "all_wrong_share": h.get("e3/all_wrong_share"),
                    }
                )
            overall = summary[-1]
            print(
                f"  ab seed {seed} {arm:7s}: pass@1 {overall['pass@1']:.3f}  "
                f"pass@{k} {overall[f'pass@{k}']:.3f}  ({seconds:.0f} s)"
            )
    return rows, curves


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _plot(curves: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for arm, colour in (("e3", "tab:blue"), ("uniform", "tab:orange")):
        for seed in sorted({c["seed"] for c in curves}):
            sel = [c for c in curves if c["arm"] == arm and c["seed"] == seed]
            steps = [c["step"] for c in sel]
            for ax, key in zip(axes, ("entropy", "temperature", "mixed_share"), strict=True):
                ys = [np.nan if c[key] is None else c[key] for c in sel]
                ax.plot(steps, ys, color=colour, alpha=0.6, label=arm if seed == 0 else None)
    for ax, label in zip(axes, ("token entropy", "temperature", "mixed groups"), strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[-1].set_xlabel("generation step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-start-steps", type=int, default=1300)
    parser.add_argument("--warm-start-seed", type=int, default=42)
    parser.add_argument("--train-prompts", type=int, default=400)
    parser.add_argument("--overhead-steps", type=int, default=30)
    parser.add_argument("--overhead-repeats", type=int, default=3)
    parser.add_argument("--ab-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--eval-prompts", type=int, default=400)
    parser.add_argument("--parts", default="overhead,ab")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.warm_start_steps, args.overhead_steps, args.overhead_repeats = 300, 10, 2
        args.ab_steps, args.seeds, args.eval_prompts = 30, 2, 100
    torch.set_num_threads(2)
    _patch_timed()
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer, seed=args.warm_start_seed)
    print(f"warm start: {args.warm_start_steps} steps, seed {args.warm_start_seed} ...")
    demo.warm_start(
        model, tokenizer, steps=args.warm_start_steps, seed=args.warm_start_seed, progress=False
    )
    state = copy.deepcopy(model.state_dict())
    dataset = demo.make_dataset(args.train_prompts, seed=0, split="train")
    held_out = demo.make_dataset(args.eval_prompts, seed=0, split="eval")
    parts = set(args.parts.split(","))

    if "overhead" in parts:
        rows = overhead(state, tokenizer, dataset, args.overhead_steps, args.overhead_repeats)
        write_csv(rows, OUT_DIR / "trl_overhead.csv")
        plain = statistics.median(r["step_ms"] for r in rows if r["trainer"] == "plain")
        e3 = statistics.median(r["step_ms"] for r in rows if r["trainer"] == "e3")
        own = statistics.median(r["e3_own_ms"] for r in rows if r["trainer"] == "e3")
        print()
        print_table(
            ["trainer", "median step (ms)", "ratio to plain", "E3's own work (ms/step)", "share"],
            [
                ["GRPOTrainer (TRL)", f"{plain:.1f}", "1.00", "-", "-"],
                [
                    "E3GRPOTrainer",
                    f"{e3:.1f}",
                    f"{e3 / plain:.3f}",
                    f"{own:.2f}",
                    f"{own / e3:.2%}",
                ],
            ],
        )

    if "ab" in parts:
        rows, curves = ab(state, tokenizer, dataset, held_out, args.ab_steps, args.seeds, args.k)
        ab_csv = write_csv(rows, OUT_DIR / "trl_ab.csv")
        curves_csv = write_csv(curves, OUT_DIR / "trl_ab_curves.csv")
        png = OUT_DIR / "trl_ab.png"
        _plot(curves, png)
        k = args.k
        print()
        buckets = [r["bucket"] for r in rows if r["arm"] == "start"]
        table = []
        for arm in ("start", "uniform", "e3"):
            for bucket in buckets:
                sel = [r for r in rows if r["arm"] == arm and r["bucket"] == bucket]
                p1 = _mean_sd([r["pass@1"] for r in sel])
                pk = _mean_sd([r[f"pass@{k}"] for r in sel])
                table.append([arm, bucket, p1, pk])
        print_table(["arm", "bucket", "pass@1 (mean ± sd over seeds)", f"pass@{k}"], table)
        print()
        table = []
        for arm in ("uniform", "e3"):
            finals = []
            for seed in range(args.seeds):
                sel = [c for c in curves if c["arm"] == arm and c["seed"] == seed]
                tail = sel[-10:]
                finals.append(
                    (
                        statistics.mean(c["entropy"] for c in tail if c["entropy"] is not None),
                        tail[-1]["temperature"],
                        statistics.mean(c["mixed_share"] for c in tail),
                    )
                )
            ent = _mean_sd([f[0] for f in finals])
            temp = _mean_sd([f[1] for f in finals])
            mix = _mean_sd([f[2] for f in finals])
            table.append([arm, ent, temp, mix])
        columns = ["arm", "final entropy (mean of last 10 steps)", "final temperature"]
        print_table([*columns, "mixed share"], table)
        print(f"\nwrote {ab_csv}, {curves_csv}, {png}")


if __name__ == "__main__":
    main()
