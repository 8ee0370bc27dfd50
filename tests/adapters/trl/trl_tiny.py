"""Tiny models, tokenizers and datasets for the TRL adapter tests (built locally, no hub)."""

from __future__ import annotations

import random
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from e3core.adapters.trl.demo import build_tokenizer


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The demo's character tokenizer (pad 0, bos 1, eos 2, unk 3, digits 4-13, + 14, = 15)."""
    return build_tokenizer()


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return Qwen2ForCausalLM(cfg)


def parse_sum(prompt: str) -> tuple[int, int]:
    """The addends of a demo prompt ``"a+b="``."""
    assert prompt.endswith("="), prompt
    a, b = prompt[:-1].split("+")
    return int(a), int(b)


def tiny_settings(tmp_path: Any, steps: int, prompts: int, generations: int) -> dict[str, Any]:
    """E3GRPOConfig keywords for a short CPU run on the tiny model (tests add their own)."""
    return {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": prompts * generations,
        "num_generations": generations,
        "max_completion_length": 4,
        "max_steps": steps,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "learning_rate": 1e-3,
        "e3_min_per_prompt": 1,
        "e3_max_per_prompt": 10,
        "e3_refit_prior": "beta",
        "e3_refit_every": None,
        "disable_tqdm": True,
        "seed": 0,
    }


def sum_dataset(num: int = 64, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for _ in range(num):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    return Dataset.from_list(rows)


def difficulty_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Deterministic in (prompt, completion) and spread in difficulty by the first addend.

    Prompts starting with 0-2 are always solved, 7-9 never, the rest depend on the completion.
    """
    out = []
    for p, c in zip(prompts, completions):
        a = int(p[0])
        if a <= 2:
            out.append(1.0)
        elif a >= 7:
            out.append(0.0)
        else:
            out.append(float((sum(map(ord, c)) + a) % 2 == 0))
    return out
