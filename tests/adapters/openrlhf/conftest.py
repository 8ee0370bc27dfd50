"""Fixtures for the OpenRLHF adapter's contract tests (real openrlhf 0.11.2, GPU parts stubbed).

OpenRLHF cannot train on CPU (GPU Ray actors, DeepSpeed + NCCL, vLLM only). These tests run the
real OpenRLHF code around E3's hooks on a local CPU Ray: the sample generator's dispatch loop
against a fake vLLM engine actor, the experience maker's advantage step on real ``Experience``
objects, a real ``Actor`` on a tiny model, and the trainer's E3 hooks with fake model groups.
Only ``vllm`` and flash-attn's CUDA extension are stubbed (``orlhf_stubs``). They run in their
own environment (``pip install -e ".[openrlhf,test]"``): OpenRLHF's pins conflict with TRL's.
"""

from __future__ import annotations

import os
from types import SimpleNamespace as NS  # noqa: N814

import orlhf_stubs
import pytest

orlhf_stubs.install()

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def local_ray():
    """A local CPU Ray whose workers load the same stubs."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={
                "worker_process_setup_hook": "orlhf_stubs.install",
                "env_vars": {"PYTHONPATH": HERE},
            },
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def launcher_patches(monkeypatch):
    """Undo, after the test, what ``launcher.install`` replaces in OpenRLHF's modules."""
    import openrlhf.trainer.ppo_trainer as ppo_trainer_module
    import openrlhf.trainer.ray.launcher as launcher_module
    import openrlhf.trainer.ray.ppo_actor as ppo_actor_module
    import openrlhf.utils.config as config_module

    for module, name in [
        (ppo_trainer_module, "PPOTrainer"),
        (ppo_actor_module, "PolicyModelActor"),
        (launcher_module, "ReferenceModelActor"),
        (config_module, "hierarchize"),
    ]:
        monkeypatch.setattr(module, name, getattr(module, name))
    return NS(
        ppo_trainer=ppo_trainer_module,
        ppo_actor=ppo_actor_module,
        launcher=launcher_module,
        config=config_module,
    )
