"""Contract: the ``e3_sync`` trainer built from verl's own generated config.

The V1 trainer is constructed by verl's registry from Hydra's ``ppo_trainer`` config; its real
``_next_train_batch`` runs on dataloader batches in verl's layout. What needs GPUs (the worker
groups, the rollout servers, the transfer queue's storage) is stubbed: the rows a step returns
are fed straight to the observe hook, or through a stubbed ``tq.kv_batch_get``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from recipe_settings import verl_settings
from verl.trainer.ppo.v1 import PPOTrainer, get_trainer_cls
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl_fixtures import build_trainer, verl_config

from e3core.adapters.verl import E3AgentLoopManager, E3PPOTrainerSync, read_e3_config
from e3core.adapters.verl import trainer as trainer_module
from e3core.prompt_keys import prompt_key


def _fake_rollouts(batch, rates: dict, rng: np.random.Generator):
    """Transfer-queue keys, uids and rewards of the completions verl would generate."""
    keys, uids, rewards = [], [], []
    counts = batch["__rollout_n__"].tolist()
    for uid, n, chat in zip(list(batch["uid"]), counts, batch["raw_prompt"]):
        rate = rates[prompt_key(chat)]
        for s in range(n):
            keys.append(f"{uid}_{s}_0")
            uids.append(str(uid))
            rewards.append(float(rng.random() < rate))
    return keys, uids, np.array(rewards)


def _run_steps(trainer, steps: int, rates: dict, seed: int = 0, entropies=None):
    rng = np.random.default_rng(seed)
    record = []
    for t in range(steps):
        batch = trainer._next_train_batch()
        keys, uids, rewards = _fake_rollouts(batch, rates, rng)
        entropy = 0.5 + 0.05 * t if entropies is None else entropies[t]
        metrics = trainer.e3_observe_rows(keys, uids, rewards, entropy)
        record.append(
            (
                batch["__rollout_n__"].tolist(),
                float(batch["__e3_temperature__"][0]),
                trainer.config.actor_rollout_ref.rollout.temperature,
                metrics,
            )
        )
    return record


PROMPTS = [[f"p{i}" for i in range(6)], [f"p{i}" for i in range(6, 12)]]
RATES = {prompt_key([{"role": "user", "content": f"p{i}"}]): i / 11 for i in range(12)}


def test_trainer_mode_reads_sync_and_uses_the_sync_replay_buffer(make_trainer):
    trainer = make_trainer()
    assert isinstance(trainer, E3PPOTrainerSync)
    assert trainer.trainer_mode == "sync" and trainer.e3_registered_mode == "e3_sync"
    assert type(trainer.replay_buffer) is ReplayBuffer
    path = trainer.config.actor_rollout_ref.rollout.agent.agent_loop_manager_class
    assert path == "e3core.adapters.verl.rollout.E3AgentLoopManager"


def test_batch_preparation_counts_temperature_and_pending(make_trainer):
    trainer = make_trainer("+e3.initial_temperature=0.9", prompts=PROMPTS)
    batch = trainer._next_train_batch()
    counts = batch["__rollout_n__"]
    assert counts.dtype == torch.int64 and counts.tolist() and int(counts.sum()) == 6 * 4
    assert all(2 <= c <= 16 for c in counts.tolist())
    assert torch.all(batch["__e3_temperature__"] == 0.9)
    assert trainer.config.actor_rollout_ref.rollout.temperature == 0.9
    ids = [prompt_key([{"role": "user", "content": p}]) for p in PROMPTS[0]]
    assert trainer._e3_pending == dict(zip(map(str, batch["uid"]), ids))


@settings(max_examples=15)
@given(
    steps=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    allocator=st.sampled_from(["knapsack", "rank", "uniform", "thompson"]),
)
def test_steps_update_the_tracker_like_a_plain_loop(steps, seed, allocator):
    make_trainer = build_trainer
    trainer = make_trainer(f"+e3.allocator={allocator}", "+e3.refit_every=null", prompts=PROMPTS)
    record = _run_steps(trainer, steps, RATES, seed=seed)
    # Plain loop over the same fake rollouts: successes and trials per prompt id.
    rng = np.random.default_rng(seed)
    replay = make_trainer(f"+e3.allocator={allocator}", "+e3.refit_every=null", prompts=PROMPTS)
    succ, trials = defaultdict(float), defaultdict(float)
    for counts, *_ in record:
        batch = replay._next_train_batch()
        batch["__rollout_n__"] = torch.tensor(counts)
        _keys, uids, rewards = _fake_rollouts(batch, RATES, rng)
        pid = {str(u): prompt_key(c) for u, c in zip(batch["uid"], batch["raw_prompt"])}
        for u, r in zip(uids, rewards):
            succ[pid[u]] += float(r >= 0.5)
            trials[pid[u]] += 1
        replay._e3_pending.clear()
    post = trainer.e3_scheduler.tracker.posterior(list(trials))
    np.testing.assert_allclose(post.alpha, [1 + succ[k] for k in trials])
    np.testing.assert_allclose(post.beta, [1 + trials[k] - succ[k] for k in trials])
    for counts, *_ in record:
        assert sum(counts) == 24


def test_entropy_drives_the_next_steps_temperature_everywhere(make_trainer):
    trainer = make_trainer("+e3.controller=pi", "+e3.target_entropy=1.0", prompts=PROMPTS)
    record = _run_steps(trainer, 4, RATES, entropies=[0.5, 0.5, 0.5, 0.5])
    temps = [r[1] for r in record]
    assert temps[0] == 1.0 and temps[1] > temps[0]  # entropy below target: heat up
    for _counts, batch_t, driver_t, metrics in record:
        assert batch_t == pytest.approx(driver_t)
        assert metrics["e3/sample_temperature"] == pytest.approx(batch_t)
        assert metrics["e3/entropy"] == 0.5
    assert trainer.config.actor_rollout_ref.rollout.temperature == pytest.approx(temps[-1])


def test_disabled_e3_is_plain_grpo_at_the_same_budget(make_trainer):
    trainer = make_trainer("+e3.enabled=false", prompts=PROMPTS)
    record = _run_steps(trainer, 4, RATES)
    assert all(counts == [4] * 6 for counts, *_ in record)
    assert all(batch_t == 1.0 for _, batch_t, _, _ in record)
    assert record[-1][3]["e3/tracked_prompts"] == 12.0


def test_multi_output_sessions_count_once_and_unknown_uids_raise(make_trainer):
    trainer = make_trainer("+e3.refit_every=null", prompts=PROMPTS)
    batch = trainer._next_train_batch()
    uid = str(batch["uid"][0])
    n = int(batch["__rollout_n__"][0])
    keys = [f"{uid}_{s}_{i}" for s in range(n) for i in range(2)]  # two outputs per session
    trainer.e3_observe_rows(keys, [uid] * len(keys), np.ones(len(keys)), 0.5)
    post = trainer.e3_scheduler.tracker.posterior([prompt_key(batch["raw_prompt"][0])])
    assert post.alpha[0] == 1 + n and post.beta[0] == 1
    trainer._next_train_batch()
    with pytest.raises(RuntimeError, match="not planned"):
        trainer.e3_observe_rows(["stranger_0_0"], ["stranger"], np.ones(1), 0.5)


def test_observe_reads_rewards_from_the_transfer_queue(make_trainer, monkeypatch):
    trainer = make_trainer("+e3.refit_every=null", prompts=PROMPTS)
    batch = trainer._next_train_batch()
    uids = [str(u) for u in batch["uid"]]
    counts = batch["__rollout_n__"].tolist()
    keys = [f"{u}_{s}_0" for u, n in zip(uids, counts) for s in range(n)]
    row_uids = [u for u, n in zip(uids, counts) for _ in range(n)]
    rows = [torch.zeros(1 + j % 3) for j in range(len(keys))]
    for j, r in enumerate(rows):
        r[-1] = float(j % 2)  # verl's token-level score sits on the last response token
    store = {"uid": row_uids, "rm_scores": torch.nested.nested_tensor(rows, layout=torch.jagged)}

    def fake_get(keys, partition_id, select_fields):
        assert partition_id == "train" and select_fields == ["uid", "rm_scores"]
        return store

    monkeypatch.setattr(trainer_module.tq, "kv_batch_get", fake_get)
    meta = SimpleNamespace(keys=keys, tags=[{} for _ in keys], partition_id="train")
    metrics = trainer._e3_observe(meta, {"actor/entropy": 0.4})
    assert metrics["e3/success_rate"] == pytest.approx(np.mean([j % 2 for j in range(len(keys))]))
    assert metrics["e3/entropy"] == 0.4


def test_checkpoint_round_trip_resumes_exactly(make_trainer, monkeypatch, tmp_path):
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    common = (
        "+e3.refit_every=2",
        f"trainer.default_local_dir={tmp_path}",
        "+e3.allocator=knapsack",
    )
    full = make_trainer(*common, prompts=PROMPTS)
    entropies = [0.5, 0.6, 0.4, 0.7, 0.5, 0.45, 0.55, 0.6]
    whole = _run_steps(full, 8, RATES, seed=3, entropies=entropies)

    first = make_trainer(*common, prompts=PROMPTS)
    _run_steps(first, 4, RATES, seed=3, entropies=entropies[:4])
    first.global_steps = 4
    first._save_checkpoint()
    assert os.path.exists(tmp_path / "global_step_4" / "e3_scheduler.pt")

    def fake_load(self):
        self.global_steps = 4

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", fake_load)
    resumed = make_trainer(*common, prompts=PROMPTS)
    resumed._load_checkpoint()
    assert resumed.config.actor_rollout_ref.rollout.temperature == pytest.approx(whole[4][1])
    # Continue with the same data and random stream as the uninterrupted run.
    rng = np.random.default_rng(3)
    for counts, *_ in whole[:4]:
        n = sum(counts)
        rng.random(n)
    resumed.train_dataloader_it = iter(resumed.train_dataloader)  # epoch restarts: 2 batches
    tail = []
    for t in range(4, 8):
        batch = resumed._next_train_batch()
        keys, uids, rewards = _fake_rollouts(batch, RATES, rng)
        resumed.e3_observe_rows(keys, uids, rewards, entropies[t])
        tail.append((batch["__rollout_n__"].tolist(), float(batch["__e3_temperature__"][0])))
    assert tail == [(c, t) for c, t, _, _ in whole[4:]]
    a, b = full.e3_scheduler.state_dict(), resumed.e3_scheduler.state_dict()
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    np.testing.assert_array_equal(a["tracker"]["successes"], b["tracker"]["successes"])


def test_fit_refuses_a_manager_that_ignores_the_temperature(make_trainer):
    trainer = make_trainer()
    with pytest.raises(TypeError, match="E3AgentLoopManager"):
        trainer.fit(object())


def test_manager_class_setting_is_checked():
    class Mine(E3AgentLoopManager):
        pass

    globals()["Mine"] = Mine
    cls = get_trainer_cls("e3_sync")
    path = f"{__name__}.Mine"
    trainer = cls(verl_config(f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={path}"))
    assert trainer.config.actor_rollout_ref.rollout.agent.agent_loop_manager_class == path
    stock = "verl.trainer.ppo.v1.agent_loop_tq.AgentLoopManagerTQ"
    with pytest.raises(ValueError, match="not an E3AgentLoopManager"):
        cls(verl_config(f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={stock}"))


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("+e3.alocator=rank", ValueError, r"e3\.alocator"),
        ("+e3.allocator=greedy", ValueError, r"e3\.allocator"),
        (
            "+e3.min_per_prompt=5",
            ValueError,
            r"e3\.min_per_prompt must be <= actor_rollout_ref\.rollout\.n \(",
        ),
        ("+e3.max_temperature=0.1", ValueError, r"e3\.max_temperature"),
        ("+e3.prompt_id_key=7", TypeError, r"e3\.prompt_id_key"),
        ("+e3.prompt_key=raw_prompt", ValueError, r"e3\.prompt_key is now e3\.prompt_id_key"),
        ("+e3.baseline=median", ValueError, r"e3\.baseline must be one of \('mean', "),
        (
            "actor_rollout_ref.rollout.temperature=2.0",
            ValueError,
            r"actor_rollout_ref\.rollout\.temperature must be <= e3\.max_temperature \(1\.5\)",
        ),
    ],
)
def test_bad_settings_are_named(override, error, match):
    with pytest.raises(error, match=match):
        read_e3_config(verl_config(override))


def test_missing_prompt_field_is_named(make_trainer):
    trainer = make_trainer("+e3.prompt_id_key=problem_id")
    with pytest.raises(KeyError, match="problem_id"):
        trainer._next_train_batch()


def test_scalar_prompt_field_is_used_as_the_id(make_trainer):
    trainer = make_trainer("+e3.prompt_id_key=index", prompts=PROMPTS)
    batch = trainer._next_train_batch()
    assert list(trainer._e3_pending.values()) == batch["index"].tolist()


@pytest.mark.parametrize("recipe", ["e3_paper", "e3_recommended"])
def test_recipes_compose_on_verls_config(recipe):
    from hydra import compose, initialize_config_dir

    folder = os.path.join(os.path.dirname(__file__), "..", "..", "..", "adapters", "verl")
    with initialize_config_dir(config_dir=os.path.abspath(folder), version_base=None):
        config = compose(config_name=recipe, overrides=["trainer.n_gpus_per_node=8"])
    # verl's own launcher-time validation (batch sizes, micro-batching, estimator) accepts it.
    from verl.trainer.main_ppo import validate_config
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    assert config.trainer.v1.trainer_mode == "e3_sync"
    assert config.algorithm.adv_estimator == "e3_grpo"
    assert config.actor_rollout_ref.rollout.n == 8 and config.data.train_batch_size == 64
    settings_, field = read_e3_config(config)
    assert field == "raw_prompt"
    # verl reads the recipe as tests/test_recipes.py does (which checks e3_paper against
    # E3Settings.paper)
    assert settings_ == verl_settings(Path(folder) / f"{recipe}.yaml")[0].validate(8)
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    assert trainer.e3_settings == settings_


def test_e3_weighting_and_baseline_reach_the_estimator(make_trainer):
    from verl import DataProto
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    from e3core import group_advantages, group_loss_weights

    trainer = make_trainer("+e3.loss_weighting=prompt", "+e3.baseline=leave_one_out")
    algorithm = trainer.config.algorithm
    assert (algorithm.e3_loss_weighting, algorithm.e3_baseline) == ("prompt", "leave_one_out")
    uids = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c"], dtype=object)
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    data = DataProto.from_dict(
        tensors={"token_level_rewards": scores[:, None], "response_mask": torch.ones(9, 1)},
        non_tensors={"uid": uids},
    )
    out = compute_advantage_for_multi_trajectories(
        data,
        batch_keys=[f"{u}_{i}_0" for i, u in enumerate(uids)],
        adv_estimator="e3_grpo",
        config=algorithm,
    )
    want = group_advantages(scores, uids, baseline="leave_one_out") * torch.as_tensor(
        group_loss_weights(uids, "prompt"), dtype=torch.float32
    )
    torch.testing.assert_close(out.batch["advantages"][:, 0], want)


def test_estimator_settings_in_algorithm_are_kept_and_conflicts_raise(make_trainer):
    trainer = make_trainer("+algorithm.e3_baseline=leave_one_out")
    assert trainer.config.algorithm.e3_baseline == "leave_one_out"
    assert trainer.config.algorithm.e3_loss_weighting == "sample"
    with pytest.raises(ValueError, match=r"e3\.loss_weighting.*algorithm\.e3_loss_weighting"):
        make_trainer("+e3.loss_weighting=prompt", "+algorithm.e3_loss_weighting=sample")


def test_a_corrupt_checkpoint_state_is_refused_naming_the_file(make_trainer, monkeypatch, tmp_path):
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    common = (f"trainer.default_local_dir={tmp_path}",)
    first = make_trainer(*common, prompts=PROMPTS)
    first.global_steps = 2
    first._save_checkpoint()
    path = tmp_path / "global_step_2" / "e3_scheduler.pt"
    assert [p.name for p in path.parent.iterdir()] == ["e3_scheduler.pt"]  # no temporary left
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    def fake_load(self):
        self.global_steps = 2

    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", fake_load)
    resumed = make_trainer(*common, prompts=PROMPTS)
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        resumed._load_checkpoint()
    assert str(path) in str(info.value)


def _saved_after_steps(make_trainer, monkeypatch, tmp_path, *overrides, steps=4):
    """A ``global_step_{steps}`` folder holding the E3 state of a run of ``steps`` steps."""
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    first = make_trainer(f"trainer.default_local_dir={tmp_path}", *overrides, prompts=PROMPTS)
    _run_steps(first, steps, RATES, seed=1)
    first.global_steps = steps

    def fake_load(self):
        self.global_steps = steps

    first._save_checkpoint()
    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", fake_load)
    return first, tmp_path / f"global_step_{steps}" / "e3_scheduler.pt"


def test_a_checkpoint_without_e3_state_is_refused_naming_the_file_and_the_option(
    make_trainer, monkeypatch, tmp_path
):
    _, path = _saved_after_steps(make_trainer, monkeypatch, tmp_path)
    path.unlink()
    resumed = make_trainer(f"trainer.default_local_dir={tmp_path}", prompts=PROMPTS)
    with pytest.raises(FileNotFoundError, match=r"e3\.resume_fresh=true") as info:
        resumed._load_checkpoint()
    assert str(path) in str(info.value)

    fresh = make_trainer(
        f"trainer.default_local_dir={tmp_path}", "+e3.resume_fresh=true", prompts=PROMPTS
    )
    fresh._load_checkpoint()
    assert fresh.e3_scheduler.step == 0  # started afresh, as asked


def test_changed_settings_come_from_the_config_and_state_from_the_checkpoint(
    make_trainer, monkeypatch, tmp_path, caplog
):
    first, path = _saved_after_steps(make_trainer, monkeypatch, tmp_path, "+e3.min_per_prompt=1")
    saved = torch.load(path, weights_only=True)
    assert saved["settings"]["min_per_prompt"] == 1 and saved["settings"]["decay"] == 1.0
    resumed = make_trainer(
        f"trainer.default_local_dir={tmp_path}",
        "+e3.min_per_prompt=3",
        "+e3.decay=0.5",
        "+e3.kp=0.3",
        "+e3.max_temperature=1.2",
        prompts=PROMPTS,
    )
    with caplog.at_level("WARNING", logger=trainer_module.__name__):
        resumed._load_checkpoint()
    sched, before = resumed.e3_scheduler, first.e3_scheduler
    assert sched.step == before.step == 4  # state: the checkpoint's
    assert sched.tracker.ids == before.tracker.ids
    assert sched.min_per_prompt == 3 and sched.tracker.decay == 0.5  # settings: the config's
    assert sched.controller.kp == 0.3 and sched.temperature <= 1.2
    assert sched.controller.integral == before.controller.integral
    assert resumed.config.actor_rollout_ref.rollout.temperature == sched.temperature
    messages = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.message]
    assert len(messages) == 1
    for text in ("e3.min_per_prompt: 1 -> 3", "e3.decay: 1.0 -> 0.5", "e3.kp: 0.1 -> 0.3"):
        assert text in messages[0]


def test_a_changed_controller_kind_is_an_error_listing_the_differences(
    make_trainer, monkeypatch, tmp_path
):
    _, path = _saved_after_steps(make_trainer, monkeypatch, tmp_path)
    resumed = make_trainer(
        f"trainer.default_local_dir={tmp_path}",
        "+e3.controller=none",
        "+e3.decay=0.9",
        prompts=PROMPTS,
    )
    before = resumed.e3_scheduler.state_dict()
    with pytest.raises(ValueError, match=r"e3\.controller='pi'") as info:
        resumed._load_checkpoint()
    text = str(info.value)
    assert str(path) in text and "e3.resume_fresh=True" in text
    assert "e3.controller: 'pi' -> 'none'" in text and "e3.decay: 1.0 -> 0.9" in text
    assert resumed.e3_scheduler.state_dict() == before  # nothing was loaded
