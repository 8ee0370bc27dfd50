"""Contract: both recipes in ``adapters/openrlhf`` pass OpenRLHF's own parser and launch checks.

``run_e3.sh`` prints its arguments (``E3_PRINT_ARGS=1``); they go through e3core's launcher into
the real ``openrlhf.cli.train_ppo_ray`` entry point (argparse, hierarchical args, its checks)
up to the first call of ``train()`` that needs GPUs (``get_strategy``), where the test stops it
and checks what ``train()`` would have received, including the E3 settings validated against
``--rollout.n_samples_per_prompt``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from e3core.adapters.openrlhf import launcher
from e3core.adapters.openrlhf.trainer import read_e3_args
from e3core.settings import E3Settings

RECIPE = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "adapters", "openrlhf", "run_e3.sh"
)


class StopLaunchError(Exception):
    pass


def _recipe_args(name: str) -> list[str]:
    env = {**os.environ, "E3_PRINT_ARGS": "1", "MODEL": "m", "DATA": "d.jsonl", "REWARD": "r.py"}
    out = subprocess.run(
        ["bash", RECIPE, name], capture_output=True, text=True, check=True, env=env
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize("name", ["paper", "recommended"])
def test_recipe_reaches_train_with_valid_e3_settings(monkeypatch, launcher_patches, name):
    import openrlhf.utils as utils_module
    import ray

    captured = {}

    def stop(args):
        captured["args"] = args
        raise StopLaunchError

    monkeypatch.setattr(utils_module, "get_strategy", stop)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # no cluster is started
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(StopLaunchError):
        launcher.main(_recipe_args(name))
    args = captured["args"]
    assert args.rollout.n_samples_per_prompt == 8 and args.rollout.batch_size == 64
    assert args.algo.advantage.estimator == "group_norm" and args.actor.entropy_coef == 0
    settings = read_e3_args(args)
    if name == "paper":
        assert settings == E3Settings.paper().validate(8)
    else:
        assert (settings.allocator, settings.controller) == ("knapsack", "pi")


def test_unknown_recipe_is_refused():
    env = {**os.environ, "MODEL": "m", "DATA": "d", "REWARD": "r"}
    out = subprocess.run(["bash", RECIPE, "fast"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "unknown recipe" in out.stderr
