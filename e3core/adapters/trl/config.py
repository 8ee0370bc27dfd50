r"""``E3GRPOConfig``: TRL's ``GRPOConfig`` plus the E3 settings (all prefixed ``e3_``).

The ``e3_`` fields are generated from :class:`~e3core.settings.E3Settings`: one field per
setting, with its type, default and help text, so a new setting reaches TRL's config, its
``--help`` and the docs' field table without being written here. Two settings TRL already has
are not repeated: the initial temperature is TRL's ``temperature`` and :math:`G` is TRL's
``num_generations``. Two fields are TRL's only: ``e3_prompt_id_column`` and ``e3_history_file``
(see :class:`E3GRPOConfig`).

Every field is a plain type so ``TrlParser`` reads it from YAML or the command line
(``--e3_allocator rank``). The budget per generation step is TRL's own:
``generation_batch_size`` rows, i.e. :math:`B` prompts times ``num_generations`` :math:`G`;
E3 redistributes those :math:`N = B\,G` rollouts over the :math:`B` prompts
(Liao et al., *Enhancing Efficiency and Exploration in RL for LLMs*, arXiv 2505.18573).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from e3core.settings import E3Settings

__all__ = ["PREFIX", "TRL_NAMES", "TRL_ONLY_FIELDS", "E3GRPOConfig", "e3_settings"]

PREFIX = "e3_"
"""How TRL's config spells an E3 setting: ``e3_`` + the :class:`E3Settings` field name."""

TRL_NAMES: dict[str, str] = {
    "initial_temperature": "temperature",
    "rollouts_per_prompt": "num_generations",
}
"""E3 quantities TRL's config already holds under its own names (no ``e3_`` field for them)."""

TRL_ONLY_FIELDS = ("e3_prompt_id_column", "e3_history_file")
"""``e3_`` fields that are not E3 settings: how TRL's rows are identified and logged."""


def _settings_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of every ``e3_`` field derived from :class:`E3Settings`."""
    hints = typing.get_type_hints(E3Settings)
    out = []
    for f in dataclasses.fields(E3Settings):
        if f.name in TRL_NAMES:
            continue
        text = E3Settings.help(f.name, prefix=PREFIX, names=TRL_NAMES)
        out.append(
            (PREFIX + f.name, hints[f.name], field(default=f.default, metadata={"help": text}))
        )
    return out


_E3SettingsFields = dataclasses.make_dataclass("_E3SettingsFields", _settings_fields())
_E3SettingsFields.__module__ = __name__
_E3SettingsFields.__doc__ = "The ``e3_`` fields generated from ``E3Settings`` (a mixin)."


@dataclass
class E3GRPOConfig(_E3SettingsFields, GRPOConfig):
    r"""``GRPOConfig`` with E3 allocation, difficulty tracking and temperature control.

    Defaults are e3core's recommended setting (knapsack allocation of the expected number of
    mixed groups under a refitted grid prior, PI control of the entropy at its first-step
    value). ``adapters/trl/paper.yaml`` holds the paper's exact setting
    (:meth:`E3Settings.paper <e3core.settings.E3Settings.paper>`).

    Each :class:`~e3core.settings.E3Settings` field ``x`` is the field ``e3_x`` here, except
    ``initial_temperature``, which is TRL's ``temperature``. The settings are validated by
    :meth:`E3Settings.validate <e3core.settings.E3Settings.validate>` (messages name the TRL
    spelling), and ``e3_max_per_prompt=None`` is resolved to ``4 * num_generations``.

    With ``e3_enabled=False`` the trainer is plain GRPO at the same budget (every prompt gets
    ``num_generations``, the temperature stays at ``temperature``) and still logs the ``e3/``
    metrics, for A/B runs; ``e3_baseline`` still applies.

    TRL's own ``e3_`` fields (not E3 settings):

    * ``e3_prompt_id_column``: dataset column with a stable prompt id.
    * ``e3_history_file``: the per-step metrics CSV, relative to ``output_dir``.
    """

    e3_prompt_id_column: str | None = field(
        default=None,
        metadata={
            "help": "Dataset column with a stable prompt id; it must exist in the training "
            "dataset. None: the column 'e3_prompt_id' if the dataset has it, else a hash of the "
            "prompt together with its images ('image' / 'images' columns) is the id."
        },
    )
    e3_history_file: str | None = field(
        default="e3_history.csv",
        metadata={
            "help": "CSV (relative to output_dir) the main process appends one row of e3/ "
            "metrics to at every generation step; trimmed on resume, overwritten by a fresh run "
            "(None: off)."
        },
    )

    def __post_init__(self) -> None:
        """TRL's checks, then the E3 settings' (:meth:`E3Settings.validate`), then TRL's own."""
        super().__post_init__()
        resolved = e3_settings(self).validate(self.num_generations, prefix=PREFIX, names=TRL_NAMES)
        self.e3_max_per_prompt = resolved.max_per_prompt
        # The command line spells None as text (TrlParser passes it through as a string).
        for name in TRL_ONLY_FIELDS:
            if getattr(self, name) in ("None", "none", "null"):
                setattr(self, name, None)
        if self.e3_prompt_id_column is not None and (
            not isinstance(self.e3_prompt_id_column, str) or not self.e3_prompt_id_column
        ):
            raise ValueError(
                "e3_prompt_id_column must be a non-empty column name or None, got "
                f"{self.e3_prompt_id_column!r}"
            )
        if self.e3_history_file is not None and (
            not isinstance(self.e3_history_file, str) or not self.e3_history_file
        ):
            raise ValueError(
                "e3_history_file must be a non-empty file name or None, got "
                f"{self.e3_history_file!r}"
            )


def e3_settings(config: E3GRPOConfig) -> E3Settings:
    """The core :class:`~e3core.settings.E3Settings` an ``E3GRPOConfig`` spells (unvalidated).

    Every setting is read from its ``e3_`` field, the initial temperature from TRL's
    ``temperature``.
    """
    values = {
        f.name: getattr(config, TRL_NAMES.get(f.name, PREFIX + f.name))
        for f in dataclasses.fields(E3Settings)
    }
    return E3Settings(**values)
