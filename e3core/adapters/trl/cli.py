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

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import TrlParser

from e3core._validation import check_float, check_int
from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.reporting import format_table, save_plot, trajectory_table
from e3core.adapters.trl.trainer import E3GRPOTrainer

__all__ = ["DEMO_DEFAULTS", "CliError", "E3ScriptArguments", "main", "run"]

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
    "report_to": "tensorboard",
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
    reward_funcs: list[str] = field(
        default_factory=lambda: ["math"],
        metadata={
            "help": "Reward function(s), summed with --reward_weights (TRL's): 'math' "
            "(math-verify accuracy), 'exact', 'module:function' or a dotted path "
            "'package.module.function'. Several: --reward_funcs math my_rewards:format_reward."
        },
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
    traceback: bool = field(
        default=False,
        metadata={"help": "Show the full traceback of a setup error (also: E3CORE_DEBUG=1)."},
    )


class CliError(Exception):
    """A bad setting, file, column or reward: one line for the user.

    :func:`run` prints it as ``error: <message>`` and exits with status 2 (no traceback unless
    ``--traceback`` or ``E3CORE_DEBUG=1``).
    """


_SETUP_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError)
"""What a bad setting, file, column or reward raises while the run is being set up."""


@contextmanager
def _setup(what: str) -> Iterator[None]:
    """Turn a setup error (``what`` names the step) into a :class:`CliError` with its message."""
    try:
        yield
    except CliError:
        raise
    except _SETUP_ERRORS as error:
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        message = " ".join(str(text).split()) or type(error).__name__
        raise CliError(f"{what}: {message}" if what else message) from error


def _has_accelerator() -> bool:
    """Whether torch sees a CUDA, MPS or XPU device."""
    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def _escape_percent(parser: argparse.ArgumentParser) -> None:
    """Escape lone ``%`` in help texts: argparse %-formats them (a bare ``%`` breaks ``--help``)."""
    for action in parser._actions:
        if action.help and "%" in action.help:
            action.help = re.sub(r"%(?![%(])", "%%", re.sub(r"%%", "\0", action.help)).replace(
                "\0", "%%"
            )


def _parser() -> TrlParser:
    parser = TrlParser((E3ScriptArguments, E3GRPOConfig))
    _escape_percent(parser)
    return parser


def _split_equals(args: Sequence[str]) -> list[str]:
    """``--config=path`` as ``--config path`` (TRL's parser only finds the spaced form)."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("--config="):
            out += ["--config", arg.split("=", 1)[1]]
        else:
            out.append(arg)
    return out


def _script_only(args: list[str]) -> E3ScriptArguments:
    """Parse the script arguments alone (flags and ``--config``), ignoring the trainer's."""
    parser = TrlParser((E3ScriptArguments,))
    _escape_percent(parser)
    script, _ = parser.parse_args_and_config(args=args, return_remaining_strings=True)
    return script


def _parse(argv: Sequence[str] | None) -> tuple[E3ScriptArguments, E3GRPOConfig]:
    """Parse the command line into the script arguments and the trainer config.

    The run's kind is decided from the parsed values (so ``--x=v`` and ``--x v`` agree, and a
    model named in a ``--config`` file counts): no model and no dataset is the embedded demo,
    which gets :data:`DEMO_DEFAULTS` (flags and ``--config`` still win); a model is a user run,
    which never gets them; a dataset without a model is an error. Without an accelerator,
    ``use_cpu`` defaults to true (one line says so).
    """
    args = _split_equals(sys.argv[1:] if argv is None else argv)
    defaults: dict[str, Any] = {}
    if not {"-h", "--help"} & set(args):
        with _setup("--config"):
            script = _script_only(args)
        if script.model_name_or_path is None and script.dataset_name is not None:
            raise CliError(
                f"--dataset_name {script.dataset_name} needs --model_name_or_path (the model to "
                "train on it); without both, the command runs the embedded demo"
            )
        if script.model_name_or_path is not None and script.dataset_name is None:
            raise CliError(
                f"--model_name_or_path {script.model_name_or_path} needs --dataset_name (a hub "
                "id or a local .json/.jsonl/.parquet file)"
            )
        if script.model_name_or_path is None:
            defaults.update(DEMO_DEFAULTS)
        if not _has_accelerator():
            defaults["use_cpu"] = True
    parser = _parser()
    if defaults:
        parser.set_defaults_with_config(**defaults)
    with _setup(""):
        script, config = parser.parse_args_and_config(args=args)
    if defaults.get("use_cpu") and config.use_cpu:
        print("[e3] no CUDA, MPS or XPU device found: training on the CPU (use_cpu=True)")
    return script, config


def _save_plot(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """The demo's learning-curve plot, or None (with a one-line notice) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("[e3] plot skipped: matplotlib is not installed (pip install matplotlib)")
        return None
    rows = [{**h, "step": i + 1, "entropy": h.get("e3/entropy")} for i, h in enumerate(history)]
    return save_plot(rows, path)


def _history_csv(config: E3GRPOConfig) -> Path | None:
    """The per-generation-step metrics file the trainer appended to (None when turned off)."""
    if config.e3_history_file is None:
        return None
    return Path(config.output_dir) / config.e3_history_file


def _run_demo(script: E3ScriptArguments, config: E3GRPOConfig) -> dict[str, Any]:
    from e3core.adapters.trl import demo
    from e3core.adapters.trl.rewards import exact_reward

    with _setup(""):
        check_int("demo_warm_start_steps", script.demo_warm_start_steps, low=1)
        check_float("demo_warm_start_seconds", script.demo_warm_start_seconds, low=0.0)
        check_int("demo_train_prompts", script.demo_train_prompts, low=1)
        check_int("demo_eval_prompts", script.demo_eval_prompts, low=1)
        check_int("eval_k", script.eval_k, low=0)
    if config.resume_from_checkpoint:
        raise CliError(
            f"--resume_from_checkpoint {config.resume_from_checkpoint}: the embedded demo does "
            "not resume (it warm-starts a fresh tiny model each time and saves no checkpoints); "
            "train your own model with --model_name_or_path and --dataset_name to resume"
        )
    started = time.perf_counter()
    tokenizer = demo.build_tokenizer()
    model = demo.build_model(tokenizer, seed=config.seed)
    print(
        f"[e3] warm-starting a tiny Qwen2: {script.demo_warm_start_steps} supervised steps "
        f"(at most {script.demo_warm_start_seconds:.0f} s) ..."
    )
    warm = demo.warm_start(
        model,
        tokenizer,
        steps=script.demo_warm_start_steps,
        seconds=script.demo_warm_start_seconds,
        seed=config.seed,
    )
    train = demo.make_dataset(script.demo_train_prompts, seed=config.seed, split="train")
    held_out = demo.make_dataset(script.demo_eval_prompts, seed=config.seed, split="eval")
    before = after = None
    if script.eval_k:
        before = demo.evaluate(model, tokenizer, held_out, k=script.eval_k, seed=config.seed)
    print(f"[e3] GRPO with E3 for {config.max_steps} steps ...")
    with _setup(""):
        trainer = E3GRPOTrainer(
            model=model,
            processing_class=tokenizer,
            reward_funcs=exact_reward,
            args=config,
            train_dataset=train,
        )
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if script.eval_k:
        after = demo.evaluate(trained, tokenizer, held_out, k=script.eval_k, seed=config.seed)
    history = trainer.e3_history
    csv_path = _history_csv(config)
    print()
    print(f"[e3] warm start: {warm.get('steps', 0):.0f} supervised steps")
    if before is not None and after is not None:
        print(f"[e3] held-out pass@1 / pass@{script.eval_k} at T=1, before and after E3 GRPO:")
        print(format_table(before.rows, after.rows))
    print("[e3] sampling temperature and token entropy over training:")
    print(trajectory_table(history))
    if csv_path is not None:
        print(f"[e3] metrics CSV: {csv_path}")
    png_path = _save_plot(history, Path(config.output_dir) / "e3_plot.png")
    if png_path is not None:
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

    with _setup("--dataset_name"):
        dataset = load_prompt_dataset(
            script.dataset_name,
            split=script.dataset_split,
            prompt_column=script.prompt_column,
            answer_column=script.answer_column,
            system_prompt=script.system_prompt,
            chat=script.chat,
            config_name=script.dataset_config,
        )
    if not script.reward_funcs:
        raise CliError("--reward_funcs needs at least one reward function")
    with _setup("--reward_funcs"):
        rewards = [load_reward(spec) for spec in script.reward_funcs]
    model = script.model_name_or_path
    local = model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep in model[:1]
    if local and not os.path.isdir(os.path.expanduser(model)):
        raise CliError(
            f"--model_name_or_path: {model!r} is no such local folder (and not a hub id 'org/name')"
        )
    with _setup("--model_name_or_path"):
        tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with _setup(""):
        trainer = E3GRPOTrainer(
            model=script.model_name_or_path,
            processing_class=tokenizer,
            reward_funcs=rewards if len(rewards) > 1 else rewards[0],
            args=config,
            train_dataset=dataset,
        )
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    history = trainer.e3_history
    csv_path = _history_csv(config)
    print("[e3] sampling temperature and token entropy over training:")
    print(trajectory_table(history))
    print(f"[e3] model saved in {config.output_dir}")
    if csv_path is not None:
        print(f"[e3] metrics CSV: {csv_path}")
    return {"history": history, "csv": csv_path, "trainer": trainer}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments (YAML ``--config`` plus flags) and train; see the module docstring.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        What the run produced (trainer, history, file paths, evaluations), for scripting.

    Raises:
        CliError: A bad setting, file, column or reward (one line; :func:`run` prints it).
    """
    script, config = _parse(argv)
    if script.model_name_or_path is None:
        return _run_demo(script, config)
    return _run_user(script, config)


def _debug_requested(args: Sequence[str]) -> bool:
    """``--traceback`` (``--traceback true``, ``--traceback=true``) given, or E3CORE_DEBUG set."""
    if os.environ.get("E3CORE_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    falsy = {"false", "0", "no"}
    for i, arg in enumerate(args):
        if arg == "--traceback":
            following = args[i + 1].lower() if i + 1 < len(args) else ""
            return following not in falsy
        if arg.startswith("--traceback="):
            return arg.split("=", 1)[1].lower() not in falsy
    return False


def run(argv: Sequence[str] | None = None) -> int:
    """The command's entry point: :func:`main`, with setup errors as one line and exit code 2.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a completed run, 2 after a setup error (printed to stderr as
        ``error: <message>``; ``--traceback`` or ``E3CORE_DEBUG=1`` raises it with its traceback).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        main(args)
    except CliError as error:
        if _debug_requested(args):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
