"""Shared helpers: OpenRLHF-style args, a prompt loader, and a fake vLLM engine actor."""

from __future__ import annotations

from types import SimpleNamespace as NS  # noqa: N814

import ray


def make_args(
    *,
    batch_size: int = 4,
    n: int = 4,
    estimator: str = "group_norm",
    dynamic_filtering: bool = False,
    e3: dict | None = None,
    temperature: float = 1.0,
) -> NS:
    """The parts of OpenRLHF's hierarchical args that the generator and experience maker read."""
    return NS(
        rollout=NS(
            batch_size=batch_size,
            n_samples_per_prompt=n,
            vllm_generate_batch_size=None,
            micro_batch_size=2,
            max_new_tokens=8,
            temperature=temperature,
        ),
        data=NS(max_len=64),
        vllm=NS(enable_sleep=False),
        algo=NS(
            dynamic_filtering_enable=dynamic_filtering,
            dynamic_filtering_range=(0.0, 0.99),
            advantage=NS(
                is_correction_level="off",
                estimator=estimator,
                gamma=1.0,
                lambd=1.0,
                no_std_norm=False,
            ),
            kl=NS(use_loss=False, init_coef=0.0, target=None),
        ),
        train=NS(dynamic_batch_enable=False, async_enable=False, seed=0),
        reward=NS(clip_range=(-10, 10)),
        e3=NS(**(e3 or {})),
    )


def prompt_loader(num: int, start: int = 0) -> list[tuple]:
    """OpenRLHF's prompt loader yields (datasources, prompts, labels, images), one prompt each."""
    return [("ds", [f"p{i}"], [f"l{i}"], [None]) for i in range(start, start + num)]


def solve_rate(prompt: str) -> float:
    """The fake policy's success rate on prompt ``p<i>``: 0, 1/3, 2/3, 1 for i mod 4."""
    return (int(prompt[1:]) % 4) / 3


@ray.remote(num_cpus=0)
class FakeEngine:
    """Stands in for OpenRLHF's vLLM engine actor: deterministic token ids and rewards."""

    def get_num_unfinished_requests(self) -> int:
        return 0

    def generate_responses(
        self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1, images=None
    ):
        rate = solve_rate(prompt)
        out = []
        for j in range(num_samples):
            reward = 1.0 if (j + 0.5) / num_samples <= rate else 0.0
            out.append(
                {
                    "prompt": prompt,
                    "label": label,
                    "images": None,
                    "mm_train_inputs": None,
                    "observation_tokens": [1, 2, 3] + [4] * (1 + j % 3),
                    "action_ranges": [(3, 4 + j % 3)],
                    "rollout_log_probs": None,
                    "truncated": False,
                    "reward": reward,
                    "scores": reward,
                    "extra_logs": {
                        "temperature": float(sampling_params.temperature),
                        "num_samples": float(num_samples),
                    },
                }
            )
        return out
