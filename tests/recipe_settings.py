"""The E3 settings of the adapters' launch recipes (``adapters/``), read as each adapter reads them.

Shared by ``tests/test_recipes.py`` (the paper recipes against :meth:`E3Settings.paper`) and the
adapters' own recipe tests, which check that the real adapter, in its framework's environment,
reads a recipe exactly as these readers do.

* TRL: ``python -m e3core.adapters.trl``'s own parser (needs ``trl``), then
  :func:`e3core.adapters.trl.config.e3_settings`.
* verl: the YAML's ``e3`` group and ``actor_rollout_ref.rollout`` (``n``, ``temperature``), as
  ``read_e3_config`` reads them (that module needs verl, so its few lines are mirrored here and
  the verl tests check the mirror).
* OpenRLHF: ``run_e3.sh``'s printed flags through the launcher's own :func:`split_e3_flags` and
  :func:`read_e3_args` (framework-free).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

from e3core.settings import E3Settings

ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"
PAPER_RECIPES = {
    "trl": ADAPTERS / "trl" / "paper.yaml",
    "verl": ADAPTERS / "verl" / "e3_paper.yaml",
    "openrlhf": ADAPTERS / "openrlhf" / "run_e3.sh",
}
"""Each adapter's paper recipe (OpenRLHF's is ``run_e3.sh paper``)."""

CPU_FLAGS = ["--bf16", "false", "--use_vllm", "false", "--gradient_checkpointing", "false"]
"""TRL flags that let a GPU recipe parse on a CPU machine (no E3 setting among them)."""


def trl_settings(path: Path) -> tuple[E3Settings, int]:
    """``(settings, G)`` of a TRL YAML recipe, through the TRL command line's parser."""
    from e3core.adapters.trl.cli import _parse
    from e3core.adapters.trl.config import e3_settings

    with tempfile.TemporaryDirectory() as out:
        _, config = _parse(["--config", str(path), *CPU_FLAGS, "--output_dir", out])
    return e3_settings(config), int(config.num_generations)


def verl_settings(path: Path) -> tuple[E3Settings, int]:
    """``(settings, G)`` of a verl YAML recipe's ``e3`` group (unvalidated)."""
    import yaml

    config = yaml.safe_load(path.read_text())
    rollout = config["actor_rollout_ref"]["rollout"]
    data = dict(config.get("e3") or {})
    data.pop("prompt_id_key", None)  # the adapter's own key, not a setting
    data.setdefault("initial_temperature", float(rollout["temperature"]))
    return E3Settings.from_mapping(data, prefix="e3."), int(rollout["n"])


def openrlhf_args(script: Path, recipe: str) -> list[str]:
    """The launcher arguments ``run_e3.sh <recipe>`` would run with (``E3_PRINT_ARGS=1``)."""
    env = {**os.environ, "E3_PRINT_ARGS": "1", "MODEL": "m", "DATA": "d.jsonl", "REWARD": "r.py"}
    out = subprocess.run(
        ["bash", str(script), recipe], capture_output=True, text=True, check=True, env=env
    )
    return out.stdout.splitlines()


def openrlhf_settings(script: Path, recipe: str) -> tuple[E3Settings, int]:
    """``(settings, G)`` of an OpenRLHF recipe, through the launcher's own reading."""
    from e3core.adapters.openrlhf.launcher import read_e3_args, split_e3_flags

    rest, e3 = split_e3_flags(openrlhf_args(script, recipe))
    flags: dict[str, str | bool] = {}
    for i, arg in enumerate(rest):
        if arg.startswith("--"):
            following = rest[i + 1] if i + 1 < len(rest) else "--"
            flags[arg] = following if not following.startswith("--") else True
    g = int(flags["--rollout.n_samples_per_prompt"])
    args = SimpleNamespace(
        e3=SimpleNamespace(**e3),
        rollout=SimpleNamespace(
            temperature=float(flags["--rollout.temperature"]), n_samples_per_prompt=g
        ),
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=flags["--algo.advantage.estimator"])
        ),
        train=SimpleNamespace(async_enable=bool(flags.get("--train.async_enable", False))),
    )
    return read_e3_args(args), g


def recipe_settings(adapter: str, path: Path, recipe: str = "paper") -> tuple[E3Settings, int]:
    """``(settings, G)`` of ``adapter``'s recipe at ``path`` (``recipe``: OpenRLHF's mode)."""
    if adapter == "trl":
        return trl_settings(path)
    if adapter == "verl":
        return verl_settings(path)
    if adapter == "openrlhf":
        return openrlhf_settings(path, recipe)
    raise ValueError(f"adapter must be one of {sorted(PAPER_RECIPES)}, got {adapter!r}")


def differences(got: E3Settings, want: E3Settings, rollouts_per_prompt: int) -> dict:
    """The settings whose validated values differ: ``{name: (got, want)}``."""
    a = got.validate(rollouts_per_prompt)
    b = want.validate(rollouts_per_prompt)
    return {
        name: (getattr(a, name), getattr(b, name))
        for name in E3Settings.__dataclass_fields__
        if getattr(a, name) != getattr(b, name)
    }
