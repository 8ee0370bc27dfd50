r"""``python -m e3core.adapters.trl``: E3 GRPO training from the command line, TRL-style.

Arguments are :class:`E3ScriptArguments` plus every :class:`E3GRPOConfig` field, from a YAML
``--config`` file and/or flags (flags win), parsed by TRL's ``TrlParser``.

* With ``--model_name_or_path`` and ``--dataset_name``: trains that model (a hub id or a local
  folder) on that dataset (a hub id or a local json/jsonl/parquet file with a prompt and an
  answer column) with the ``--reward`` function (``math``, ``exact`` or ``module:function``).
* With no model: the embedded demo. It builds a character tokenizer and a tiny Qwen2 locally (no
  downloads), warm-starts it with supervised steps on addition problems whose difficulty spreads
  from 1-digit (solved) to 4-digit (mostly unsolved), trains it with E3 for a few minutes on CPU,
  and prints pass@1 / pass@k per difficulty bucket before and after, the temperature and entropy
  trajectory, and where it wrote ``e3_history.csv`` and ``e3_plot.png``.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import TrlParser

from e3core._validation import check_float, check_int
from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import E3GRPOTrainer

__all__ = ["DEMO_DEFAULTS", "E3ScriptArguments", "main", "write_history"]

DEMO_DEFAULTS: dict[str, Any] = {
    "output_dir": "e3_trl_demo",
    "per_device_train_batch_size": 64,
    "num_generations": 8,
    "max_completion_length": 6,
    "learning_rate": 3e-4,
    "beta": 0.0,
    "max_steps": 400,
    "logging_steps": 20,
    "save_strategy": "no",
    "report_to": "none",
    "bf16": False,
    "seed": 42,
    # The target entropy is the mean of the first 20 steps' entropies: one step of 64 short
    # completions is too noisy a measurement to hold for the whole run.
    "e3_warmup_steps": 20,
}
"""The embedded demo's training settings (``adapters/trl/demo.yaml`` holds the same)."""


@dataclass
class E3ScriptArguments:
    """What to train on; the training settings themselves are :class:`E3GRPOConfig`'s."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model hub id or local folder (None: the embedded demo's tiny model)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Dataset hub id or local .json/.jsonl/.parquet file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the prompts."})
    answer_column: str = field(default="answer", metadata={"help": "Column with the answers."})
    reward: str = field(
        default="math",
        metadata={"help": "'math' (math-verify accuracy), 'exact', or 'module:function'."},
    )
    chat: bool = field(
        default=False, metadata={"help": "Send prompts as chat messages (chat models)."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message before each prompt (with --chat)."}
    )
    demo_warm_start_steps: int = field(
        default=1300,
        metadata={"help": "Demo: supervised warm-start steps (about 110 s on 2 CPU cores)."},
    )
    demo_warm_start_seconds: float = field(
        default=600.0,
        metadata={"help": "Demo: upper bound on the warm start's wall time, in seconds."},
    )
    demo_train_prompts: int = field(
        default=800,
        metadata={"help": "Demo: number of training prompts (400 steps x 8 visit each ~4 times)."},
    )
    demo_eval_prompts: int = field(
        default=400, metadata={"help": "Demo: number of held-out evaluation prompts."}
    )
    eval_k: int = field(
        default=8, metadata={"help": "Demo: samples per prompt for pass@k (0: no evaluation)."}
    )


def write_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write per-generation-step metrics to CSV (counts as a space-separated string).

    Args:
        history: :attr:`E3GRPOTrainer.e3_history`.
        path: The CSV file to write.

    Returns:
        The path written.
    """
    keys: list[str] = ["step"]
    for row in history:
        keys += [k for k in row if k not in keys]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for i, row in enumerate(history):
            record = {**row, "step": i + 1}
            if isinstance(record.get("counts"), list):
                record["counts"] = " ".join(str(c) for c in record["counts"])
            writer.writerow(record)
    return out


def _trajectory(history: Sequence[dict[str, Any]]) -> str:
    """Temperature, target and measured entropy at five points of the run, as a text table."""
    if not history:
        return "(no generation steps)"
    n = len(history)
    picks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
    lines = [f"{'step':>6}  {'temperature':>11}  {'target H':>8}  {'entropy H':>9}  {'mixed':>5}"]
    for i in picks:
        h = history[i]

        def fmt(key: str, width: int, row: dict[str, Any] = h) -> str:
            value = row.get(key)
            ok = isinstance(value, float) and math.isfinite(value)
            return f"{value:>{width}.3f}" if ok else f"{'-':>{width}}"

        lines.append(
            f"{i + 1:>6}  {fmt('e3/sample_temperature', 11)}  {fmt('e3/target_entropy', 8)}  "
            f"{fmt('e3/entropy', 9)}  {fmt('e3/mixed_share', 5)}"
        )
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> tuple[E3ScriptArguments, E3GRPOConfig]:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((E3ScriptArguments, E3GRPOConfig))
    demo = "--model_name_or_path" not in args and not _config_names_model(args)
    if demo:
        defaults = {**DEMO_DEFAULTS, "use_cpu": not torch.cuda.is_available()}
        parser.set_defaults_with_config(**defaults)
    script, config = parser.parse_args_and_config(args=args)
    return script, config


def _config_names_model(args: list[str]) -> bool:
    if "--config" not in args:
        return False
    import yaml

    with open(args[args.index("--config") + 1]) as f:
        config = yaml.safe_load(f) or {}
    return bool(config.get("model_name_or_path"))


def _run_demo(script: E3ScriptArguments, config: E3GRPOConfig) -> dict[str, Any]:
    from e3core.adapters.trl import demo_task

    check_int("demo_warm_start_steps", script.demo_warm_start_steps, low=1)
    check_float("demo_warm_start_seconds", script.demo_warm_start_seconds, low=0.0)
    check_int("demo_train_prompts", script.demo_train_prompts, low=1)
    check_int("demo_eval_prompts", script.demo_eval_prompts, low=1)
    check_int("eval_k", script.eval_k, low=0)
    started = time.perf_counter()
    tokenizer = demo_task.build_tokenizer()
    model = demo_task.build_model(tokenizer, seed=config.seed)
    print(
        f"[e3] warm-starting a tiny Qwen2: {script.demo_warm_start_steps} supervised steps "
        f"(at most {script.demo_warm_start_seconds:.0f} s) ..."
    )
    warm = demo_task.warm_start(
        model,
        tokenizer,
        steps=script.demo_warm_start_steps,
        seconds=script.demo_warm_start_seconds,
        seed=config.seed,
    )
    train = demo_task.make_dataset(script.demo_train_prompts, seed=config.seed, split="train")
    held_out = demo_task.make_dataset(script.demo_eval_prompts, seed=config.seed, split="eval")
    before = after = None
    if script.eval_k:
        before = demo_task.evaluate(model, tokenizer, held_out, k=script.eval_k, seed=config.seed)
    print(f"[e3] GRPO with E3 for {config.max_steps} steps ...")
    trainer = E3GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=demo_task.exact_match_reward,
        args=config,
        train_dataset=train,
    )
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if script.eval_k:
        after = demo_task.evaluate(trained, tokenizer, held_out, k=script.eval_k, seed=config.seed)
    history = trainer.e3_history
    out = Path(config.output_dir)
    csv_path = write_history(history, out / "e3_history.csv")
    plot_rows = [
        {**h, "step": i + 1, "entropy": h.get("e3/entropy")} for i, h in enumerate(history)
    ]
    png_path = demo_task.save_plot(plot_rows, out / "e3_plot.png")
    print()
    print(f"[e3] warm start: {warm.get('steps', 0):.0f} supervised steps")
    if before is not None and after is not None:
        print(f"[e3] held-out pass@1 / pass@{script.eval_k} at T=1, before and after E3 GRPO:")
        print(demo_task.format_table(before.rows, after.rows))
    print("[e3] sampling temperature and token entropy over training:")
    print(_trajectory(history))
    print(f"[e3] metrics CSV: {csv_path}")
    print(f"[e3] plot:        {png_path}")
    print(f"[e3] total time:  {time.perf_counter() - started:.0f} s")
    return {
        "before": before,
        "after": after,
        "history": history,
        "csv": csv_path,
        "png": png_path,
        "trainer": trainer,
    }


def _run_user(script: E3ScriptArguments, config: E3GRPOConfig) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from e3core.adapters.trl.data import load_prompt_dataset
    from e3core.adapters.trl.rewards import load_reward

    if script.dataset_name is None:
        raise ValueError("dataset_name is required with model_name_or_path (a hub id or a file)")
    dataset = load_prompt_dataset(
        script.dataset_name,
        split=script.dataset_split,
        prompt_column=script.prompt_column,
        answer_column=script.answer_column,
        system_prompt=script.system_prompt,
        chat=script.chat,
        config_name=script.dataset_config,
    )
    reward = load_reward(script.reward)
    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = E3GRPOTrainer(
        model=script.model_name_or_path,
        processing_class=tokenizer,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
    )
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    history = trainer.e3_history
    csv_path = write_history(history, Path(config.output_dir) / "e3_history.csv")
    print("[e3] sampling temperature and token entropy over training:")
    print(_trajectory(history))
    print(f"[e3] model and metrics CSV in {config.output_dir} ({csv_path.name})")
    return {"history": history, "csv": csv_path, "trainer": trainer}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments (YAML ``--config`` plus flags) and train; see the module docstring.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        What the run produced (trainer, history, file paths, evaluations), for scripting.
    """
    script, config = _parse(argv)
    if script.model_name_or_path is None:
        return _run_demo(script, config)
    return _run_user(script, config)
