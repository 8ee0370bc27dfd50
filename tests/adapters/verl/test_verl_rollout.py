"""Contract: the real ``AgentLoopWorkerTQ`` prompt path samples E3's counts at E3's temperature.

The trainer's own ``_next_train_batch`` output goes through the real
``AgentLoopWorkerTQ.generate_sequences`` and ``_run_prompt`` of verl 0.9.1; only the model call
(``_run_agent_loop``) and the transfer-queue put are stubbed (they need GPUs and a running
transfer queue).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.utils import tensordict_utils as tu

from e3core.adapters.verl import E3AgentLoopManager, E3AgentLoopWorker
from e3core.adapters.verl.rollout import E3AgentLoopWorkerActor
from e3core.prompt_keys import prompt_key


class Recorder:
    def __init__(self):
        self.calls: list[dict[str, Any]] = []
        self.tags: list[tuple[str, str]] = []


def _worker(config: Any, rec: Recorder) -> E3AgentLoopWorker:
    worker = object.__new__(E3AgentLoopWorker)  # __init__ loads a tokenizer and tools: not needed
    worker.config = config
    worker.background_tasks = set()

    async def fake_agent_loop(sampling_params, trajectory, trace, session_id, **prompt):
        rec.calls.append(
            {
                "uid": prompt["uid"],
                "session_id": session_id,
                "sampling_params": dict(sampling_params),
                "fields": sorted(prompt),
                "validate": trajectory["validate"],
            }
        )

    worker._run_agent_loop = fake_agent_loop
    return worker


def _run(worker: E3AgentLoopWorker, batch: Any) -> None:
    async def main():
        await worker.generate_sequences(batch)
        while worker.background_tasks:
            await asyncio.gather(*list(worker.background_tasks))

    asyncio.run(main())


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()

    async def fake_put(key, partition_id, tag=None, **_):
        rec.tags.append((key, tag["status"]))

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_put", fake_put)
    return rec


def test_worker_samples_allocated_counts_at_injected_temperature(make_trainer, recorder):
    # An E3 temperature (not verl's 1.0) that the samplers must use.
    trainer = make_trainer(
        "+e3.allocator=rank", "+e3.max_per_prompt=8", "+e3.initial_temperature=1.23"
    )
    prompts = [f"q{i}" for i in range(6)]
    ids = [prompt_key([{"role": "user", "content": p}]) for p in prompts]
    # Give the prompts different difficulties so the allocation is uneven.
    trainer.e3_scheduler.tracker.update(ids, np.array([0, 1, 2, 3, 4, 5.0]), np.full(6, 5.0))
    batch = trainer._next_train_batch()
    counts = batch["__rollout_n__"].tolist()
    assert sum(counts) == 6 * 4 and len(set(counts)) > 1
    assert trainer.config.actor_rollout_ref.rollout.temperature == pytest.approx(1.23)

    _run(_worker(trainer.config, recorder), batch)

    per_uid: dict[str, list[int]] = defaultdict(list)
    for call in recorder.calls:
        per_uid[call["uid"]].append(call["session_id"])
        assert call["sampling_params"]["temperature"] == pytest.approx(1.23)
        assert "__e3_temperature__" not in call["fields"]
        assert "__rollout_n__" not in call["fields"]
        assert call["validate"] is False
    uids = list(batch["uid"])
    assert [sorted(per_uid[u]) for u in uids] == [list(range(n)) for n in counts]
    assert sorted(recorder.tags) == sorted(
        [(u, "running") for u in uids] + [(u, "finished") for u in uids]
    )


def test_validation_batches_keep_verl_val_settings(make_trainer, recorder):
    trainer = make_trainer(
        "actor_rollout_ref.rollout.val_kwargs.temperature=0.3",
        "actor_rollout_ref.rollout.val_kwargs.n=2",
    )
    batch_dict = {
        "raw_prompt": np.array([[{"role": "user", "content": "v"}]], dtype=object),
        "index": np.array([0]),
        "uid": np.array(["val-uid"], dtype=object),
    }
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", 1)
    tu.assign_non_tensor_data(batch, "validate", True)
    _run(_worker(trainer.config, recorder), batch)
    assert [c["session_id"] for c in recorder.calls] == [0, 1]
    assert all(c["sampling_params"]["temperature"] == 0.3 for c in recorder.calls)


def test_manager_uses_the_e3_worker():
    manager = object.__new__(E3AgentLoopManager)
    E3AgentLoopManager.__init__(manager, config=_ConfigStub(), llm_client=None)
    assert manager.agent_loop_workers_class is E3AgentLoopWorkerActor
    assert E3AgentLoopWorkerActor.__ray_actor_class__ is E3AgentLoopWorker


class _ConfigStub:
    class actor_rollout_ref:  # noqa: N801
        rollout = None
        model = None
