"""The embedded demo of ``python -m e3core.adapters.trl``: addition with a spread of difficulty.

Everything runs on a CPU with no model hub, in three parts:

* :mod:`~e3core.adapters.trl.demo.task`: the character tokenizer, the tiny Qwen2, the addition
  problems ``"a+b="`` with their difficulty buckets (``"1-digit"`` .. ``"4-digit"``) and their
  held-out split, and the dataset. Completions are scored by
  :data:`e3core.adapters.trl.rewards.exact_reward`.
* :mod:`~e3core.adapters.trl.demo.supervised`: the supervised warm start that gives the policy
  E3 GRPO starts from (easy sums solved, hard ones not).
* :mod:`~e3core.adapters.trl.demo.evaluation`: sampled pass@1 and pass@k per bucket on the
  held-out prompts.

The console tables and the learning-curve plot are :mod:`e3core.adapters.trl.reporting`'s,
shared with the command line's run of a user's model. Every public name of the three modules is
importable from this package.
"""

from e3core.adapters.trl.demo.evaluation import EvalResult, evaluate, summarize
from e3core.adapters.trl.demo.supervised import DEFAULT_WARM_START_WEIGHTS, warm_start
from e3core.adapters.trl.demo.task import (
    ALPHABET,
    BOS_TOKEN,
    DEFAULT_WEIGHTS,
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
    bucket_of,
    build_model,
    build_tokenizer,
    in_eval_split,
    make_dataset,
    sample_problems,
)

__all__ = [
    "ALPHABET",
    "BOS_TOKEN",
    "DEFAULT_WARM_START_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "EvalResult",
    "bucket_of",
    "build_model",
    "build_tokenizer",
    "evaluate",
    "in_eval_split",
    "make_dataset",
    "sample_problems",
    "summarize",
    "warm_start",
]
