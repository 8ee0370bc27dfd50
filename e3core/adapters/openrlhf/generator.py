r"""``E3SamplesGenerator``: OpenRLHF's vLLM sample generator with E3's per-prompt counts.

OpenRLHF 0.11's ``SamplesGenerator._dispatch_prompts_to_vllm`` sends every prompt to a vLLM
engine with the same ``n_samples_per_prompt`` and the run's fixed temperature. Here each batch
of prompts is first planned by the scheduler (E3, Liao et al., arXiv 2505.18573): prompt
:math:`i` is dispatched with :math:`n_i` samples, :math:`\sum_i n_i = B\,n`, at the step's
temperature :math:`T_t`. A single prompt dispatched as a dynamic-filtering refill gets
:math:`n` (a budget of one prompt). ``generate_samples`` then hands back whole prompt groups
only: a group that OpenRLHF's positional cut at ``batch_size * n_samples_per_prompt`` would split
goes back to the front of the buffer for the next step. Evaluation prompts keep OpenRLHF's
own settings.

A prompt's identity (its tracker id and advantage group) is :func:`e3core.prompt_key` of its
text, computed once per prompt when it is dispatched and carried by each of its samples in
``Experience.info[PROMPT_KEY_INFO]`` (read back with :func:`sample_key`); the experience maker
removes that entry before the experiences reach the model actors, so it is never logged.
"""

from __future__ import annotations

from typing import Any

import torch
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from e3core.prompt_keys import prompt_key
from e3core.scheduler import E3Scheduler

__all__ = ["PROMPT_KEY_INFO", "E3SamplesGenerator", "sample_key"]

PROMPT_KEY_INFO = "e3_prompt_key"
"""The ``Experience.info`` entry holding a sample's prompt key (a one-element int64 tensor)."""


def sample_key(sample: Any) -> int:
    """The prompt key an :class:`E3SamplesGenerator` sample carries (see the module docstring).

    Raises:
        KeyError: The sample was not made by an :class:`E3SamplesGenerator`.
    """
    info = getattr(sample, "info", None) or {}
    if PROMPT_KEY_INFO not in info:
        raise KeyError(
            f"the sample has no info[{PROMPT_KEY_INFO!r}]: E3 needs the samples of "
            "E3SamplesGenerator, which carry their prompt's key"
        )
    return int(info[PROMPT_KEY_INFO].reshape(-1)[0])


class E3SamplesGenerator(SamplesGenerator):
    """``SamplesGenerator`` that dispatches each prompt with its E3 count and temperature.

    Args:
        *args: ``SamplesGenerator``'s arguments.
        scheduler: The run's :class:`~e3core.E3Scheduler` (shared with the trainer).
        **kwargs: ``SamplesGenerator``'s keyword arguments.
    """

    def __init__(self, *args: Any, scheduler: E3Scheduler, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.e3_scheduler = scheduler
        self.e3_temperature: float = scheduler.temperature
        self.e3_planned: dict[int, int] = {}
        self._e3_keys: dict[Any, int] = {}  # prompt -> key, for the prompts being generated
        self._e3_eval = False

    def generate_eval_samples(self, **generate_kwargs: Any) -> Any:
        """OpenRLHF's evaluation sampling, untouched by E3."""
        self._e3_eval = True
        try:
            return super().generate_eval_samples(**generate_kwargs)
        finally:
            self._e3_eval = False

    def _dispatch_prompts_to_vllm(
        self, prompts: list, labels: list, *, images: list | None = None, **generate_kwargs: Any
    ) -> list:
        if self._e3_eval or not prompts:
            return super()._dispatch_prompts_to_vllm(
                prompts, labels, images=images, **generate_kwargs
            )
        keys = [prompt_key(p) for p in prompts]
        self._e3_keys.update(zip(prompts, keys, strict=True))
        plan = self.e3_scheduler.plan(keys)
        self.e3_temperature = float(plan.temperature)
        kwargs = {**generate_kwargs, "temperature": self.e3_temperature}
        refs: list = []
        for i, (prompt, label) in enumerate(zip(prompts, labels, strict=True)):
            count = int(plan.counts[i])
            self.e3_planned[keys[i]] = self.e3_planned.get(keys[i], 0) + count
            refs += super()._dispatch_prompts_to_vllm(
                [prompt],
                [label],
                images=None if images is None else [images[i]],
                **{**kwargs, "n_samples_per_prompt": count},
            )
        return refs

    def _process_response_into_experience(self, response: Any, **generate_kwargs: Any) -> Any:
        """OpenRLHF's sample, carrying its prompt's key (training samples only)."""
        sample = super()._process_response_into_experience(response, **generate_kwargs)
        if not self._e3_eval:
            key = self._e3_keys[response["prompt"]]
            sample.info[PROMPT_KEY_INFO] = torch.tensor([key], dtype=torch.int64)
        return sample

    def generate_samples(self, **generate_kwargs: Any) -> tuple[list, Any, int, bool]:
        """OpenRLHF's ``generate_samples``, returning whole prompt groups only."""
        try:
            samples, pass_rate, consumed, exhausted = super().generate_samples(**generate_kwargs)
        finally:
            self._e3_keys.clear()  # every dispatched prompt's samples are made by now
        buffer = self._sample_buffer
        if samples and buffer and sample_key(buffer[0]) == sample_key(samples[-1]):
            cut = len(samples)
            while cut > 0 and sample_key(samples[cut - 1]) == sample_key(buffer[0]):
                cut -= 1
            if cut > 0:  # never hand back nothing: a lone oversized group passes through
                self._sample_buffer = samples[cut:] + buffer
                samples = samples[:cut]
                exhausted = False
        return samples, pass_rate, consumed, exhausted
