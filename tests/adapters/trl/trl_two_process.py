"""Run under ``torchrun --nproc_per_node 2``: 4 E3 steps on CPU (gloo); each rank writes JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_tokenizer

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import E3GRPOTrainer


class Recording(E3GRPOTrainer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.steps: list[dict[str, Any]] = []

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        out = super()._generate_and_score_completions(inputs)
        last = self.e3_history[-1]
        assert self._e3_rewards is not None
        self.steps.append(
            {
                "counts": last["counts"],
                "temperature": last["e3/sample_temperature"],
                "rewards": self._e3_rewards[:, 0].tolist(),
                "advantages": out["advantages"].tolist(),
            }
        )
        return out


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    args = E3GRPOConfig(
        output_dir=str(out / "run"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=4,
        max_steps=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        learning_rate=1e-3,
        e3_min_per_prompt=1,
        e3_max_per_prompt=10,
        e3_refit_prior="beta",
        e3_refit_every=None,
        e3_target_entropy=50.0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Recording(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=difficulty_reward,
        args=args,
        train_dataset=sum_dataset(16),
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({"steps": trainer.steps}))


if __name__ == "__main__":
    main()
