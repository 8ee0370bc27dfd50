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
"""

from __future__ import annotations

from typing import Any

from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from e3core.prompt_keys import prompt_key
from e3core.scheduler import E3Scheduler

__all__ = ["E3SamplesGenerator", "sample_prompt_key"]


def sample_prompt_key(prompt: Any) -> int:
    """The tracker id and advantage group of a prompt (its text, hashed)."""
    return prompt_key(prompt)


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
        keys = [sample_prompt_key(p) for p in prompts]
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

    def generate_samples(self, **generate_kwargs: Any) -> tuple[list, Any, int, bool]:
        """OpenRLHF's ``generate_samples``, returning whole prompt groups only."""
        samples, pass_rate, consumed, exhausted = super().generate_samples(**generate_kwargs)
        buffer = self._sample_buffer
        if samples and buffer and _key(buffer[0]) == _key(samples[-1]):
            cut = len(samples)
            while cut > 0 and _key(samples[cut - 1]) == _key(buffer[0]):
                cut -= 1
            if cut > 0:  # never hand back nothing: a lone oversized group passes through
                self._sample_buffer = samples[cut:] + buffer
                samples = samples[:cut]
                exhausted = False
        return samples, pass_rate, consumed, exhausted


def _key(sample: Any) -> int:
    return sample_prompt_key(sample.prompts[0])
