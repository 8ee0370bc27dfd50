"""One tiny E3 training run on CPU, for the kill tests (``test_trl_kill.py``); test-only code.

Usage: ``python trl_kill_run.py OUT SPG ITERS STEPS SAVE_STEPS [CHECKPOINT]``. Trains the tiny
Qwen2 of ``trl_tiny`` for ``STEPS`` optimizer steps (8 prompts, 2 prompts x 2 completions per
optimizer step, ``steps_per_generation=SPG``, ``num_iterations=ITERS``), checkpointing every
``SAVE_STEPS`` under ``OUT/out``, resuming from ``CHECKPOINT`` when given. On completion it
writes ``OUT/result.pt``: the final parameters, the final E3 state and this run's
``e3_history`` (global step, counts, temperature per generation step).

A stall to kill in, set by ``E3_KILL_STALL=<where>:<global_step>``, writes ``OUT/stalled``
then sleeps, while saving checkpoint ``<global_step>``:

* ``e3_tmp``: inside the atomic write of ``e3_scheduler.pt``, with the temporary file written
  and not yet moved into place;
* ``trl_files``: after ``e3_scheduler.pt``, the model, optimizer and RNG states, before
  ``trainer_state.json`` (which makes the folder a resumable checkpoint) and the rotation.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_settings, tiny_tokenizer

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import E3GRPOTrainer

B, G = 2, 2  # prompts per optimizer step, completions per prompt
N_PROMPTS = 8
STALL_SECONDS = 900.0  # the test kills the process before this ends


def _stall(out: Path) -> None:
    (out / "stalled").write_text(str(os.getpid()))
    time.sleep(STALL_SECONDS)


def install_stall(out: Path, trainer: E3GRPOTrainer, spec: str) -> None:
    """Patch the save path so that saving checkpoint ``step`` stalls at ``where``."""
    where, step_text = spec.split(":")
    step = int(step_text)

    def at_step() -> bool:
        return trainer.state.global_step == step

    if where == "e3_tmp":
        real_save = torch.save

        def stalling_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            real_save(obj, f, *args, **kwargs)
            if isinstance(obj, dict) and "pending_entropies" in obj and at_step():
                f.flush()  # the temporary file is on disk, whole, not yet replaced
                _stall(out)

        torch.save = stalling_save  # atomic_torch_save calls torch.save on the temp file
    elif where == "trl_files":
        real_rng = Trainer._save_rng_state

        def stalling_rng(self: Any, output_dir: Any) -> None:
            real_rng(self, output_dir)
            if at_step():
                _stall(out)

        Trainer._save_rng_state = stalling_rng  # type: ignore[method-assign]
    else:
        raise ValueError(f"E3_KILL_STALL: unknown place {where!r}")


def main() -> None:
    out = Path(sys.argv[1])
    spg, iters, steps, save_steps = (int(x) for x in sys.argv[2:6])
    checkpoint = sys.argv[6] if len(sys.argv) > 6 else None
    torch.set_num_threads(1)
    settings = tiny_settings(out, steps, B, G)
    settings.update(
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=int(os.environ.get("E3_KILL_SAVE_LIMIT", "0")) or None,
        steps_per_generation=spg,
        num_iterations=iters,
        e3_refit_every=2,
        e3_refit_min_prompts=1,
    )
    trainer = E3GRPOTrainer(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=difficulty_reward,
        args=E3GRPOConfig(**settings),
        train_dataset=sum_dataset(N_PROMPTS),
    )
    if os.environ.get("E3_KILL_STALL"):
        install_stall(out, trainer, os.environ["E3_KILL_STALL"])
    trainer.train(resume_from_checkpoint=checkpoint)
    result = {
        "params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "e3_state": trainer.e3_state_dict(),
        "history": [
            {
                "global_step": int(row["global_step"]),
                "counts": list(row["counts"]),
                "temperature": float(row["e3/sample_temperature"]),
            }
            for row in trainer.e3_history
        ],
    }
    torch.save(result, out / "result.pt")


if __name__ == "__main__":
    main()
