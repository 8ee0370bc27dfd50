"""Contract: ``set_temperature`` on E3's Ray model actors reaches OpenRLHF's real ``Actor``.

A tiny random Llama is wrapped in OpenRLHF 0.11.2's ``Actor`` (its forward divides the logits by
``self.temperature`` before log-probs and entropy); the policy and reference actor classes are
instantiated without Ray's GPU placement (their ``init_model_from_pretrained`` needs DeepSpeed
on a GPU), holding that ``Actor`` where OpenRLHF puts it.
"""

from __future__ import annotations

import pytest
import torch
from openrlhf.models.actor import Actor
from transformers import LlamaConfig, LlamaForCausalLM

from e3core.adapters.openrlhf.actors import E3PolicyModelActor, E3ReferenceModelActor


def _actor() -> Actor:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    actor = Actor(LlamaForCausalLM(config).eval(), temperature=1.0)
    actor.packing_samples = False  # OpenRLHF sets it only when loading from a path
    return actor


def _reference_logprobs(actor: Actor, sequences: torch.Tensor, temperature: float, n: int):
    logits = actor.model(sequences).logits.float() / temperature
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, sequences[:, 1:, None])[..., 0]
    return logp[:, -n:]


@pytest.mark.parametrize(
    ("cls", "attribute"), [(E3PolicyModelActor, "actor"), (E3ReferenceModelActor, "model")]
)
def test_set_temperature_reaches_the_actor_forward(cls, attribute):
    holder = object.__new__(cls.__ray_actor_class__)
    actor = _actor()
    setattr(holder, attribute, actor)
    sequences = torch.randint(0, 32, (3, 10))
    mask = torch.ones_like(sequences)
    action_mask = torch.ones(3, 4, dtype=torch.bool)
    with torch.no_grad():
        at_one = actor(sequences, action_mask=action_mask, attention_mask=mask)
        assert holder.set_temperature(0.5) == 0.5
        assert holder.get_temperature() == 0.5 and actor.temperature == 0.5
        at_half = actor(sequences, action_mask=action_mask, attention_mask=mask)
        want = _reference_logprobs(actor, sequences, 0.5, 4)
    torch.testing.assert_close(at_half, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(at_half, at_one)


def test_bad_temperature_is_named():
    holder = object.__new__(E3PolicyModelActor.__ray_actor_class__)
    holder.actor = _actor()
    with pytest.raises(ValueError, match="temperature"):
        holder.set_temperature(0.0)
    assert holder.actor.temperature == 1.0


def test_actor_classes_keep_openrlhf_behaviour():
    from openrlhf.trainer.ray.launcher import ReferenceModelActor
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    assert issubclass(E3PolicyModelActor.__ray_actor_class__, PolicyModelActor.__ray_actor_class__)
    assert issubclass(
        E3ReferenceModelActor.__ray_actor_class__, ReferenceModelActor.__ray_actor_class__
    )
