"""``python -m e3core.adapters.openrlhf``: OpenRLHF's own PPO launcher with E3 inside.

Takes every flag of ``python -m openrlhf.cli.train_ppo_ray`` (OpenRLHF 0.11) plus the E3
settings as ``--e3.<name> <value>`` (the fields of :class:`e3core.settings.E3Settings`, e.g.
``--e3.allocator knapsack --e3.max_per_prompt 32``). It removes the ``--e3.*`` flags, puts
them into OpenRLHF's hierarchical ``args`` as ``args.e3``, installs e3core's classes where
OpenRLHF's ``train()`` looks them up (the PPO trainer, the policy and reference actors) and runs
OpenRLHF's own entry point, so argument parsing, checks and Ray orchestration are upstream's.
The E3 settings are validated right after OpenRLHF parses its flags, before Ray starts
(including the estimator and ``--train.async_enable``, whose async trainer E3 does not replace).
"""

from __future__ import annotations

import dataclasses
import runpy
import sys
import typing
from collections.abc import Sequence
from typing import Any

from e3core.settings import E3Settings

__all__ = ["install", "main", "split_e3_flags"]

_PREFIX = "--e3."
_FIELDS = {f.name: f for f in dataclasses.fields(E3Settings)}


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
        from types import SimpleNamespace

        from e3core.adapters.openrlhf.trainer import read_e3_args

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
