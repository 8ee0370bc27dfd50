"""Contract: the E3 PPO trainer's hooks around OpenRLHF 0.11.2's own ``PPOTrainer`` code.

OpenRLHF's model groups are GPU Ray actors (DeepSpeed, NCCL); here they are fakes that record
the calls OpenRLHF's trainer makes on them (``set_temperature``, ``save_checkpoint``). The
upstream ``train_step`` (which needs those GPU actors) is replaced by a recorder, so what is
tested is the order and content of E3's work around it.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace as NS  # noqa: N814

import numpy as np
import pytest
import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer
from orlhf_fixtures import make_args, prompt_loader

from e3core import prompt_key
from e3core.adapters.openrlhf import launcher
from e3core.adapters.openrlhf.experience import E3ExperienceMaker
from e3core.adapters.openrlhf.generator import PROMPT_KEY_INFO, E3SamplesGenerator
from e3core.adapters.openrlhf.trainer import (
    SETTINGS_KEY,
    STATE_KEY,
    E3PPOTrainerBase,
    read_e3_args,
)

UPSTREAM = PPOTrainer.__ray_actor_class__


class FakeGroup:
    """Duck-types OpenRLHF's ``RayActorGroup`` for the calls the trainer makes."""

    def __init__(self):
        self.temperature = 1.0
        self.calls: list[str] = []
        self.client_states: dict | None = None

    def async_run_method(self, method_name, **kwargs):
        self.calls.append(method_name)
        if method_name == "set_temperature":
            self.temperature = kwargs["temperature"]
        if method_name == "save_checkpoint":
            self.client_states = kwargs["client_states"]
        return [ray.put(None)]


def _fake_upstream_init(self, pretrain, strategy, actor, critic, reward, ref, engines, **kw):
    """What OpenRLHF's PPOTrainer.__init__ leaves behind, without GPUs, tokenizer or datasets."""
    self.strategy, self.args = strategy, strategy.args
    self.actor_model_group, self.critic_model_group = actor, critic
    self.reward_model_group, self.reference_model_group = reward, ref
    self.vllm_engines, self.generate_kwargs = engines, kw
    self.prompts_dataloader, self.eval_dataloader = prompt_loader(16), None
    self.max_steps = 8
    self.kl_ctl = NS(value=0.0)
    self.wandb_logger = self.tensorboard_logger = None
    self.best_eval_metric_value, self.best_eval_metric_key = float("-inf"), ""
    self._latest_eval_metric_value = None


class Tok:
    pad_token_id = 0

    def __len__(self):
        return 32


def _trainer(monkeypatch, local_ray, **e3):
    def init(self, pretrain, strategy, *groups, **kw):
        _fake_upstream_init(self, pretrain, strategy, *groups, **kw)
        self.tokenizer = Tok()

    monkeypatch.setattr(UPSTREAM, "__init__", init)
    args = make_args(batch_size=4, n=4, e3=e3)
    args.ckpt = NS(save_steps=1, path="/nonexistent", load_enable=False)
    args.logger = NS(logging_steps=1)
    actor, ref = FakeGroup(), FakeGroup()
    trainer = E3PPOTrainerBase("tiny", NS(args=args), actor, None, None, ref, [], temperature=1.0)
    return trainer, actor, ref


def _samples(prompts_and_rewards):
    """Samples as E3SamplesGenerator makes them: each carries its prompt's key."""
    return [
        NS(
            prompts=[p],
            rewards=torch.tensor([r]),
            info={PROMPT_KEY_INFO: torch.tensor([prompt_key(p)])},
        )
        for p, r in prompts_and_rewards
    ]


def test_init_installs_e3_generator_maker_and_scheduler(monkeypatch, local_ray):
    trainer, _, _ = _trainer(monkeypatch, local_ray, allocator="rank", loss_weighting="prompt")
    assert isinstance(trainer.samples_generator, E3SamplesGenerator)
    assert trainer.samples_generator.e3_scheduler is trainer.e3_scheduler
    assert isinstance(trainer.experience_maker, E3ExperienceMaker)
    assert trainer.experience_maker.loss_weighting == "prompt"
    assert trainer.e3_settings.allocator == "rank" and trainer.e3_scheduler.steps_per_epoch == 4


def test_train_step_sets_temperature_before_upstream_then_observes(monkeypatch, local_ray):
    trainer, actor, ref = _trainer(
        monkeypatch, local_ray, initial_temperature=1.2, target_entropy=0.5
    )
    seen = {}

    def upstream_step(self, rollout_samples, global_step):
        seen["actor"], seen["ref"] = actor.temperature, ref.temperature
        return {"entropy_loss": 0.3}, global_step + 1

    monkeypatch.setattr(UPSTREAM, "train_step", upstream_step)
    trainer.samples_generator.e3_temperature = 1.2
    samples = _samples([("p1", 1.0), ("p1", 0.0), ("p2", 1.0), ("p1", 1.0), ("p3", 0.0)])
    status, step = trainer.train_step(samples, 5)
    assert step == 6 and seen == {"actor": 1.2, "ref": 1.2}
    assert status["e3/sample_temperature"] == 1.2 and status["e3/entropy"] == 0.3
    post = trainer.e3_scheduler.tracker.posterior([prompt_key(p) for p in ("p1", "p2", "p3")])
    np.testing.assert_allclose(post.alpha, [1 + 2, 1 + 1, 1 + 0])
    np.testing.assert_allclose(post.beta, [1 + 1, 1 + 0, 1 + 1])
    assert trainer.e3_scheduler.temperature != 1.2  # the controller reacted to the entropy


def test_missing_entropy_leaves_the_temperature(monkeypatch, local_ray):
    trainer, _, _ = _trainer(monkeypatch, local_ray)
    monkeypatch.setattr(UPSTREAM, "train_step", lambda self, s, g: ({}, g + 1))
    trainer.train_step(_samples([("p1", 1.0), ("p1", 0.0)]), 0)
    assert trainer.e3_scheduler.temperature == 1.0


def test_checkpoint_round_trip_resumes_the_scheduler(monkeypatch, local_ray):
    trainer, actor, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5)
    monkeypatch.setattr(UPSTREAM, "train_step", lambda self, s, g: ({"entropy_loss": 0.2}, g + 1))
    rng = np.random.default_rng(0)
    for step in range(3):
        batch = [f"p{i}" for i in range(4 * step, 4 * step + 4)]
        plan = trainer.e3_scheduler.plan([prompt_key(p) for p in batch])
        pairs = [
            (p, float(rng.random() < 0.5)) for p, c in zip(batch, plan.counts) for _ in range(c)
        ]
        trainer.samples_generator.e3_temperature = plan.temperature
        trainer.train_step(_samples(pairs), step)
    trainer.save_logs_and_checkpoints(3, {}, {"global_step": 3})
    states = actor.client_states
    assert STATE_KEY in states and states["global_step"] == 3

    resumed, _, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5)
    resumed.restore_best_checkpoint_state(states)
    assert resumed.samples_generator.e3_temperature == trainer.e3_scheduler.temperature
    keys = [prompt_key(f"p{i}") for i in range(4)]
    a, b = trainer.e3_scheduler.plan(keys), resumed.e3_scheduler.plan(keys)
    assert a.counts.tolist() == b.counts.tolist() and a.temperature == b.temperature


def _saved_states(monkeypatch, local_ray, steps=3, **e3):
    """The ``client_states`` of a checkpoint after ``steps`` steps, and the trainer that saved."""
    trainer, actor, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5, **e3)
    monkeypatch.setattr(UPSTREAM, "train_step", lambda self, s, g: ({"entropy_loss": 0.2}, g + 1))
    rng = np.random.default_rng(0)
    for step in range(steps):
        batch = [f"p{i}" for i in range(4 * step, 4 * step + 4)]
        plan = trainer.e3_scheduler.plan([prompt_key(p) for p in batch])
        pairs = [
            (p, float(rng.random() < 0.5)) for p, c in zip(batch, plan.counts) for _ in range(c)
        ]
        trainer.samples_generator.e3_temperature = plan.temperature
        trainer.train_step(_samples(pairs), step)
    trainer.save_logs_and_checkpoints(steps, {}, {"global_step": steps})
    return dict(actor.client_states), trainer


def test_a_checkpoint_without_e3_state_is_refused_naming_it_and_the_option(monkeypatch, local_ray):
    states, _ = _saved_states(monkeypatch, local_ray)
    assert states[SETTINGS_KEY]["target_entropy"] == 0.5
    del states[STATE_KEY]
    resumed, _, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5)
    with pytest.raises(ValueError, match=r"--e3\.resume_fresh=true") as info:
        resumed.restore_best_checkpoint_state(states)
    assert "/nonexistent/_actor" in str(info.value)

    fresh, _, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5, resume_fresh=True)
    fresh.restore_best_checkpoint_state(states)
    assert fresh.e3_scheduler.step == 0  # started afresh, as asked
    # a fresh run's states (global_step 0) carry no E3 state and need none
    resumed.restore_best_checkpoint_state({"global_step": 0, "episode": 0})
    assert resumed.e3_scheduler.step == 0


def test_an_invalid_e3_state_is_refused_naming_the_checkpoint(monkeypatch, local_ray):
    states, _ = _saved_states(monkeypatch, local_ray)
    states[STATE_KEY] = {**states[STATE_KEY], "step": -1}
    resumed, _, _ = _trainer(monkeypatch, local_ray, target_entropy=0.5)
    before = resumed.e3_scheduler.state_dict()
    with pytest.raises(ValueError, match=r"state\['step'\]") as info:
        resumed.restore_best_checkpoint_state(states)
    assert "/nonexistent/_actor" in str(info.value)
    assert resumed.e3_scheduler.state_dict() == before


def test_changed_settings_come_from_the_flags_and_state_from_the_checkpoint(
    monkeypatch, local_ray, caplog
):
    states, first = _saved_states(monkeypatch, local_ray)
    resumed, _, _ = _trainer(
        monkeypatch, local_ray, target_entropy=0.5, decay=0.5, kp=0.3, min_per_prompt=3
    )
    with caplog.at_level("WARNING", logger="e3core.adapters.openrlhf.trainer"):
        resumed.restore_best_checkpoint_state(states)
    sched, before = resumed.e3_scheduler, first.e3_scheduler
    assert sched.step == before.step == 3 and sched.tracker.ids == before.tracker.ids
    assert sched.controller.integral == before.controller.integral
    assert sched.tracker.decay == 0.5 and sched.controller.kp == 0.3  # the flags'
    assert sched.min_per_prompt == 3
    assert resumed.samples_generator.e3_temperature == sched.temperature
    messages = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.message]
    assert len(messages) == 1
    for text in ("--e3.decay: 1.0 -> 0.5", "--e3.kp: 0.1 -> 0.3", "--e3.min_per_prompt: 2 -> 3"):
        assert text in messages[0]


def test_a_changed_controller_kind_is_an_error_listing_the_differences(monkeypatch, local_ray):
    states, _ = _saved_states(monkeypatch, local_ray)
    resumed, _, _ = _trainer(monkeypatch, local_ray, controller="none", decay=0.9)
    with pytest.raises(ValueError, match=r"--e3\.controller='pi'") as info:
        resumed.restore_best_checkpoint_state(states)
    text = str(info.value)
    assert "--e3.controller: 'pi' -> 'none'" in text and "--e3.decay: 1.0 -> 0.9" in text
    assert "--e3.resume_fresh=True" in text


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"estimator": "gae"}, "estimator"),
        ({"e3": {"allocator": "greedy"}}, r"--e3\.allocator"),
        ({"e3": {"alocator": "rank"}}, r"--e3\.alocator"),
        (
            {"e3": {"min_per_prompt": 9}},
            r"--e3\.min_per_prompt must be <= --rollout\.n_samples_per_prompt \(4\), got 9",
        ),
        (
            {"temperature": 2.0},
            r"--rollout\.temperature must be <= --e3\.max_temperature \(1\.5\), got 2\.0 "
            r"\(or set --e3\.controller none\)",
        ),
        # OpenRLHF's estimator decides the baseline: another --e3.baseline is refused
        ({"e3": {"baseline": "leave_one_out"}}, r"--e3\.baseline='leave_one_out' cannot be"),
        (
            {"estimator": "rloo", "e3": {"baseline": "mean"}},
            r"--algo\.advantage\.estimator='rloo', whose baseline is 'leave_one_out'",
        ),
    ],
)
def test_bad_settings_are_named(change, match):
    args = make_args(**change)
    with pytest.raises(ValueError, match=match):
        read_e3_args(args)


@pytest.mark.parametrize(
    ("estimator", "given", "baseline"),
    [
        ("group_norm", {}, "mean"),
        ("dr_grpo", {"baseline": "mean"}, "mean"),
        ("rloo", {}, "leave_one_out"),
        ("rloo", {"baseline": "leave_one_out"}, "leave_one_out"),
    ],
)
def test_settings_carry_the_estimators_baseline(estimator, given, baseline):
    assert read_e3_args(make_args(estimator=estimator, e3=given)).baseline == baseline


def test_async_trainer_is_refused():
    args = make_args()
    args.train.async_enable = True
    with pytest.raises(ValueError, match="async"):
        read_e3_args(args)


def test_launcher_splits_e3_flags():
    rest, e3 = launcher.split_e3_flags(
        [
            "--actor.model_name_or_path",
            "m",
            "--e3.allocator",
            "rank",
            "--e3.max_per_prompt=12",
            "--e3.anneal_final_ratio",
            "0.9",
            "--e3.refit_every",
            "none",
            "--e3.enabled",
            "true",
            "--rollout.n_samples_per_prompt",
            "8",
        ]
    )
    assert rest == ["--actor.model_name_or_path", "m", "--rollout.n_samples_per_prompt", "8"]
    assert e3 == {
        "allocator": "rank",
        "max_per_prompt": 12,
        "anneal_final_ratio": 0.9,
        "refit_every": None,
        "enabled": True,
    }
    with pytest.raises(ValueError, match=r"--e3\.alocator"):
        launcher.split_e3_flags(["--e3.alocator", "rank"])
    with pytest.raises(ValueError, match="needs a value"):
        launcher.split_e3_flags(["--e3.allocator"])


def test_launcher_installs_e3_where_openrlhf_train_looks(launcher_patches):
    ppo_trainer_module = launcher_patches.ppo_trainer
    ppo_actor_module = launcher_patches.ppo_actor
    launcher_module = launcher_patches.launcher
    config_module = launcher_patches.config
    launcher.install({"allocator": "rank"})
    from e3core.adapters.openrlhf.actors import E3PolicyModelActor, E3ReferenceModelActor
    from e3core.adapters.openrlhf.trainer import E3PPOTrainer

    assert ppo_trainer_module.PPOTrainer is E3PPOTrainer
    assert ppo_actor_module.PolicyModelActor is E3PolicyModelActor
    assert launcher_module.ReferenceModelActor is E3ReferenceModelActor
    flat = {
        "rollout.n_samples_per_prompt": 8,
        "rollout.temperature": 1.0,
        "algo.advantage.estimator": "group_norm",
        "train.async_enable": False,
    }
    args = config_module.hierarchize(NS(**flat))
    assert args.e3.allocator == "rank" and args.rollout.n_samples_per_prompt == 8


def test_launcher_runs_openrlhf_entry_point_with_e3(monkeypatch, launcher_patches):
    """The real train_ppo_ray __main__ parses OpenRLHF's flags; train() gets E3's classes."""
    ppo_trainer_module = launcher_patches.ppo_trainer
    captured = {}

    class StopLaunchError(Exception):
        pass

    def fake_get_strategy(args):
        captured["args"] = args
        captured["trainer"] = ppo_trainer_module.PPOTrainer
        raise StopLaunchError

    import openrlhf.utils as utils_module

    monkeypatch.setattr(utils_module, "get_strategy", fake_get_strategy)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    argv = [
        "--actor.model_name_or_path",
        "tiny",
        "--data.prompt_dataset",
        "data.jsonl",
        "--rollout.n_samples_per_prompt",
        "8",
        "--algo.advantage.estimator",
        "group_norm",
        "--e3.allocator",
        "rank",
    ]
    with pytest.raises(StopLaunchError):
        launcher.main(argv)
    args = captured["args"]
    assert args.e3.allocator == "rank" and args.rollout.n_samples_per_prompt == 8
    from e3core.adapters.openrlhf.trainer import E3PPOTrainer

    assert captured["trainer"] is E3PPOTrainer


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--train.async_enable"], "async"),
        (["--e3.min_per_prompt", "9"], r"--e3\.min_per_prompt"),
        (["--algo.advantage.estimator", "gae"], "estimator"),
    ],
)
def test_launcher_refuses_bad_setups_before_ray_starts(monkeypatch, launcher_patches, extra, match):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    argv = [
        "--actor.model_name_or_path",
        "tiny",
        "--data.prompt_dataset",
        "data.jsonl",
        "--rollout.n_samples_per_prompt",
        "8",
        "--algo.advantage.estimator",
        "group_norm",
        *extra,
    ]
    with pytest.raises(ValueError, match=match):
        launcher.main(argv)
