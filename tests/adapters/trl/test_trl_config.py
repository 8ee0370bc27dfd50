"""E3GRPOConfig's ``e3_`` fields are E3Settings' fields, and its validation is E3Settings'."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from e3core.adapters.trl.config import (
    PREFIX,
    TRL_NAMES,
    TRL_ONLY_FIELDS,
    E3GRPOConfig,
    e3_settings,
)
from e3core.settings import E3Settings

G = 4


def config(tmp_path: Path, **kwargs: Any) -> E3GRPOConfig:
    return E3GRPOConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=G, **kwargs)


def test_every_setting_has_its_config_field_with_the_same_type_default_and_help() -> None:
    settings = {f.name: f for f in dataclasses.fields(E3Settings)}
    fields = {f.name: f for f in dataclasses.fields(E3GRPOConfig) if f.name.startswith(PREFIX)}
    setting_hints = typing.get_type_hints(E3Settings)
    config_hints = typing.get_type_hints(E3GRPOConfig)
    # TRL holds the initial temperature as its own `temperature`: no e3_ field for it.
    assert set(TRL_NAMES) - {"rollouts_per_prompt"} <= set(settings)
    expected = {PREFIX + name for name in settings if name not in TRL_NAMES}
    # The two TRL-only fields are not E3 settings: they name a dataset column and a log file of
    # TRL's run, which verl and OpenRLHF spell in their own terms (or do not have).
    assert set(TRL_ONLY_FIELDS).isdisjoint(expected)
    assert set(fields) == expected | set(TRL_ONLY_FIELDS), "e3_ fields and settings differ"
    for name in expected:
        setting = settings[name.removeprefix(PREFIX)]
        assert config_hints[name] == setting_hints[setting.name], name
        assert fields[name].default == setting.default, name
        assert fields[name].metadata["help"] == E3Settings.help(
            setting.name, prefix=PREFIX, names=TRL_NAMES
        ), name
        assert fields[name].metadata["help"], name
    # the help speaks TRL's language: settings it mentions carry their e3_ / TRL names
    assert "`num_generations`" in fields["e3_min_per_prompt"].metadata["help"]
    assert "`e3_target_entropy`" in fields["e3_warmup_steps"].metadata["help"]
    assert "`temperature`" in fields["e3_enabled"].metadata["help"]


def test_e3_settings_reads_every_setting(tmp_path: Path) -> None:
    # a value other than the default for every setting (enabled and baseline included, which an
    # earlier hand-written copy dropped)
    changed: dict[str, Any] = {
        "enabled": False,
        "allocator": "rank",
        "value": "info_gain",
        "min_per_prompt": 3,
        "max_per_prompt": 9,
        "success_threshold": 0.7,
        "prior_alpha": 2.0,
        "prior_beta": 3.0,
        "decay": 0.9,
        "refit_prior": "beta",
        "refit_every": 7,
        "refit_min_prompts": 5,
        "rank_by": "epoch_accuracy",
        "steps_per_epoch": 11,
        "widen_per_epoch": 1,
        "widen_min": 2,
        "widen_max": 10,
        "controller": "e3",
        "target_entropy": 0.4,
        "warmup_steps": 3,
        "kp": 0.2,
        "ki": 0.3,
        "initial_temperature": 0.8,
        "min_temperature": 0.3,
        "max_temperature": 1.2,
        "anneal_final_ratio": 0.9,
        "loss_weighting": "prompt",
        "baseline": "leave_one_out",
        "seed": 5,
        "resume_fresh": True,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(E3Settings)}
    defaults = E3Settings()
    assert all(getattr(defaults, k) != v for k, v in changed.items())
    kwargs = {TRL_NAMES.get(k, PREFIX + k): v for k, v in changed.items()}
    assert e3_settings(config(tmp_path, **kwargs)) == E3Settings(**changed)


def test_disabled_e3_follows_the_settings_rule_for_the_temperature(tmp_path: Path) -> None:
    # One rule: with E3 off (or no controller) the temperature is not bounded by the
    # controller's bounds, in TRL exactly as in E3Settings (verl, OpenRLHF).
    E3Settings(enabled=False, initial_temperature=2.0).validate(G)
    assert config(tmp_path, e3_enabled=False, temperature=2.0).temperature == 2.0
    assert config(tmp_path, e3_controller="none", temperature=2.0).temperature == 2.0
    with pytest.raises(ValueError, match=r"^temperature must be <= e3_max_temperature \(1\.5\)"):
        config(tmp_path, temperature=2.0)


def test_validation_is_e3_settings_in_trl_spelling(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        config(tmp_path, e3_allocator="bogus")
    assert str(info.value).startswith("e3_allocator must be one of ('knapsack',")
    assert "got 'bogus'" in str(info.value)
    with pytest.raises(TypeError, match="e3_enabled must be a bool"):
        config(tmp_path, e3_enabled="false")
    with pytest.raises(ValueError, match="e3_baseline must be one of"):
        config(tmp_path, e3_baseline="median")
    assert config(tmp_path).e3_max_per_prompt == 4 * G  # None resolved, as E3Settings does
