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
from recipe_settings import PAPER_RECIPES, openrlhf_args, openrlhf_settings

from e3core.adapters.openrlhf import launcher
from e3core.adapters.openrlhf.trainer import read_e3_args

RECIPE = PAPER_RECIPES["openrlhf"]


class StopLaunchError(Exception):
    pass


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
        launcher.main(openrlhf_args(RECIPE, name))
    args = captured["args"]
    assert args.rollout.n_samples_per_prompt == 8 and args.rollout.batch_size == 64
    assert args.algo.advantage.estimator == "group_norm" and args.actor.entropy_coef == 0
    settings = read_e3_args(args)
    # OpenRLHF's parsed args give the settings tests/test_recipes.py reads from the printed
    # flags (which checks the paper recipe against E3Settings.paper)
    assert settings == openrlhf_settings(RECIPE, name)[0]
    if name == "recommended":
        assert (settings.allocator, settings.controller) == ("knapsack", "pi")


def test_unknown_recipe_is_refused():
    env = {**os.environ, "MODEL": "m", "DATA": "d", "REWARD": "r"}
    out = subprocess.run(["bash", RECIPE, "fast"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "unknown recipe" in out.stderr
