"""Contract: ``import verl`` registers e3core through the ``verl.plugins`` entry point.

verl's loader swallows a failing plugin at DEBUG level, so registration is asserted, in a fresh
interpreter that never imports e3core itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import verl
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.v1 import get_trainer_cls
fn = get_adv_estimator_fn("e3_grpo")
cls = get_trainer_cls("e3_sync")
print(json.dumps({
    "estimator": f"{fn.__module__}.{fn.__name__}",
    "trainer": f"{cls.__module__}.{cls.__name__}",
    "plugin_loaded": "e3core.adapters.verl.plugin" in sys.modules,
}))
"""


def test_import_verl_registers_estimator_and_trainer():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "estimator": "e3core.adapters.verl.advantage.compute_e3_grpo_advantage",
        "trainer": "e3core.adapters.verl.trainer.E3PPOTrainerSync",
        "plugin_loaded": True,
    }


def test_registration_is_idempotent():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from e3core.adapters.verl import compute_e3_grpo_advantage, register_estimator
    from e3core.adapters.verl.plugin import register

    register_estimator()
    register()
    assert get_adv_estimator_fn("e3_grpo") is compute_e3_grpo_advantage


def test_core_import_does_not_import_verl():
    code = "import sys, e3core; print('verl' in sys.modules or 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
