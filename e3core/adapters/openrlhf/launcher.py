"""``python -m e3core.adapters.openrlhf``: OpenRLHF's own PPO launcher with E3 inside.

Takes every flag of ``python -m openrlhf.cli.train_ppo_ray`` (OpenRLHF 0.11) plus the E3
settings as ``--e3.<name> <value>`` (the fields of :class:`e3core.settings.E3Settings`, e.g.
``--e3.allocator knapsack --e3.max_per_prompt 32``). It removes the ``--e3.*`` flags, puts
them into OpenRLHF's hierarchical ``args`` as ``args.e3``, installs e3core's classes where
OpenRLHF's ``train()`` looks them up (the PPO trainer, the policy and reference actors) and runs
OpenRLHF's own entry point, so argument parsing, checks and Ray orchestration are upstream's.
The E3 settings are validated right after OpenRLHF parses its flags, before Ray starts
(:func:`read_e3_args`: the settings, the estimator, and ``--train.async_enable``, whose async
trainer E3 does not replace). This module imports no OpenRLHF code until :func:`install`.
"""

from __future__ import annotations

import dataclasses
import runpy
import sys
import typing
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from e3core.settings import E3Settings

__all__ = [
    "ESTIMATOR_BASELINES",
    "SUPPORTED_ESTIMATORS",
    "install",
    "main",
    "read_e3_args",
    "split_e3_flags",
]

_PREFIX = "--e3."
_FIELDS = {f.name: f for f in dataclasses.fields(E3Settings)}
_NAMES = {
    "rollouts_per_prompt": "--rollout.n_samples_per_prompt",
    "initial_temperature": "--rollout.temperature",
}

ESTIMATOR_BASELINES = {"group_norm": "mean", "dr_grpo": "mean", "rloo": "leave_one_out"}
"""The ``--algo.advantage.estimator`` values E3 supports (they group samples by prompt), and
the group baseline each one uses: with OpenRLHF the estimator decides the baseline."""
SUPPORTED_ESTIMATORS = tuple(ESTIMATOR_BASELINES)


def _convert(name: str, text: str) -> Any:
    hint = typing.get_type_hints(E3Settings)[name]
    if text.lower() in {"none", "null"} and "None" in str(hint):
        return None
    if hint is bool or str(hint) == "bool":
        if text.lower() in {"true", "1", "yes"}:
            return True
        if text.lower() in {"false", "0", "no"}:
            return False
        raise ValueError(f"{_PREFIX}{name} takes true or false, got {text!r}")
    for kind in (int, float):
        if kind.__name__ in str(hint):
            try:
                return kind(text)
            except ValueError:
                continue
    if "str" in str(hint):
        return text
    raise ValueError(f"{_PREFIX}{name}: cannot read {text!r} as {hint}")


def split_e3_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate ``--e3.<name> <value>`` (or ``--e3.<name>=<value>``) from OpenRLHF's flags.

    Returns:
        ``(openrlhf_argv, e3_settings)``, the settings converted to their field types.

    Raises:
        ValueError: An unknown ``--e3.`` name, a missing or unreadable value.
    """
    rest: list[str] = []
    e3: dict[str, Any] = {}
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith(_PREFIX):
            rest.append(arg)
            i += 1
            continue
        name, eq, value = arg[len(_PREFIX) :].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"{arg} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        if name not in _FIELDS:
            raise ValueError(
                f"unknown E3 flag {_PREFIX}{name}; the E3 flags are "
                f"{sorted(_PREFIX + k for k in _FIELDS)}"
            )
        e3[name] = _convert(name, value)
    return rest, e3


def read_e3_args(args: Any) -> E3Settings:
    """The validated :class:`E3Settings` in ``args.e3`` (a namespace or dict; absent: defaults).

    The initial temperature is ``--rollout.temperature`` unless ``--e3.initial_temperature`` is
    given; ``--algo.advantage.estimator`` must group by prompt (:data:`SUPPORTED_ESTIMATORS`) and
    decides the baseline (:data:`ESTIMATOR_BASELINES`), so ``--e3.baseline`` is refused unless it
    names the estimator's; the trainer must be synchronous. Messages name OpenRLHF's flags where
    they set a bound.

    Raises:
        ValueError, TypeError: A bad setting, named as ``--e3.<name>`` or OpenRLHF's flag.
    """
    raw = getattr(args, "e3", None)
    data = dict(vars(raw) if isinstance(raw, SimpleNamespace) else (raw or {}))
    names = dict(_NAMES)
    if "initial_temperature" in data:
        del names["initial_temperature"]
    else:
        data["initial_temperature"] = float(args.rollout.temperature)
    settings = E3Settings.from_mapping(data, prefix=_PREFIX)
    estimator = args.algo.advantage.estimator
    if estimator not in ESTIMATOR_BASELINES:
        raise ValueError(
            f"--algo.advantage.estimator={estimator!r} is not supported with E3 (groups of "
            f"different sizes); use one of {SUPPORTED_ESTIMATORS}"
        )
    baseline = ESTIMATOR_BASELINES[estimator]
    if "baseline" in data and data["baseline"] != baseline:
        raise ValueError(
            f"{_PREFIX}baseline={data['baseline']!r} cannot be honoured with "
            f"--algo.advantage.estimator={estimator!r}, whose baseline is {baseline!r}: with "
            f"OpenRLHF the estimator decides the baseline ({ESTIMATOR_BASELINES}); drop "
            f"{_PREFIX}baseline or choose the estimator"
        )
    if getattr(args.train, "async_enable", False):
        raise ValueError(
            "--train.async_enable is not supported with E3: the async trainer generates ahead "
            "of the update, so the temperature a batch is sampled at would lag the controller"
        )
    settings = dataclasses.replace(settings, baseline=baseline)
    g = int(args.rollout.n_samples_per_prompt)
    return settings.validate(g, prefix=_PREFIX, names=names)


def install(e3_settings: dict[str, Any]) -> None:
    """Put e3core's classes and ``args.e3`` where OpenRLHF's ``train()`` will find them."""
    import openrlhf.trainer.ppo_trainer as ppo_trainer_module
    import openrlhf.trainer.ray.launcher as launcher_module
    import openrlhf.trainer.ray.ppo_actor as ppo_actor_module
    import openrlhf.utils.config as config_module

    from e3core.adapters.openrlhf.actors import E3PolicyModelActor, E3ReferenceModelActor
    from e3core.adapters.openrlhf.trainer import E3PPOTrainer

    E3Settings.from_mapping(e3_settings, prefix=_PREFIX)  # unknown names fail here
    ppo_trainer_module.PPOTrainer = E3PPOTrainer
    ppo_actor_module.PolicyModelActor = E3PolicyModelActor
    launcher_module.ReferenceModelActor = E3ReferenceModelActor
    original = getattr(config_module.hierarchize, "__wrapped__", config_module.hierarchize)

    def hierarchize_with_e3(args: Any) -> Any:
        out = original(args)
        out.e3 = SimpleNamespace(**e3_settings)
        read_e3_args(out)  # fail before Ray starts: bad settings, estimator, async trainer
        return out

    hierarchize_with_e3.__wrapped__ = original  # type: ignore[attr-defined]
    config_module.hierarchize = hierarchize_with_e3


def main(argv: Sequence[str] | None = None) -> None:
    """Run OpenRLHF's ``train_ppo_ray`` entry point with E3 installed."""
    args = list(sys.argv[1:] if argv is None else argv)
    rest, e3 = split_e3_flags(args)
    install(e3)
    sys.argv = ["openrlhf.cli.train_ppo_ray", *rest]
    runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
