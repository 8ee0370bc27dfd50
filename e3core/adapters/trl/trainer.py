r"""``E3GRPOTrainer``: TRL's ``GRPOTrainer`` with E3 rollout allocation and temperature control.

At each generation step (Liao et al., arXiv 2505.18573, Alg. 1):

1. The entropy measured by the policy updates since the last generation goes to the
   temperature controller, which sets :math:`T_t`.
2. The generation batch is gathered from all processes: :math:`B` prompts, each repeated
   :math:`G` times by TRL's sampler. The scheduler allocates counts :math:`n_i` with
   :math:`\sum_i n_i = B\,G` (computed on every rank, rank 0's broadcast); the rows are
   re-expanded so prompt :math:`i` appears :math:`n_i` times, and each process takes its
   usual slice, so the per-process batch shape is unchanged.
3. :math:`T_t` is set in the three places TRL reads it: the ``transformers`` generation config
   and kwargs, the vLLM sampler, and the fused LM head that computes training log-probs and
   entropy, so a buffered batch trains at the temperature it was sampled at.
4. TRL generates and scores; the advantages are then recomputed over the gathered rewards by
   prompt group of any size (:func:`e3core.group_advantages`, with ``e3_baseline``'s baseline:
   ``mean`` as TRL's GRPO, or RLOO's ``leave_one_out``, which also applies with
   ``e3_enabled=False``), the fixed-group metrics are recomputed, and the rewards go to the
   difficulty tracker. Both of TRL's
   ``multi_objective_aggregation`` modes are reproduced over uneven groups.
5. The step's ``e3/`` metrics go to TRL's logger (counters and state values such as ``e3/step``
   are logged as their last value, see :data:`LAST_VALUE_METRICS`), to
   :attr:`E3GRPOTrainer.e3_history` and, on the main process, as one row appended to
   ``<output_dir>/e3_history.csv`` (:mod:`e3core.adapters.trl.history`).

The scheduler's state is saved as ``e3_scheduler.pt`` in every checkpoint, first and atomically,
and restored by ``resume_from_checkpoint`` under the config's settings (see
:meth:`E3GRPOTrainer.e3_load_state_dict`); a checkpoint without it, a corrupt one, or one inside
a generation cycle is refused with a message saying why. The training sampler draws each
epoch's order from ``(seed, epoch)`` (:class:`EpochRepeatSampler`), so a resume in any epoch
sees the uninterrupted run's prompts.

A prompt's identity (the key the difficulty tracker files its successes under) is its value in
the id column (``e3_prompt_id_column``, or ``e3_prompt_id`` when the dataset has it), else a hash
of its ``prompt`` together with its images (the ``image`` or ``images`` field, and images inside
chat messages): the same text with different images is two prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from e3core.adapters.trl.config import PREFIX, TRL_NAMES, E3GRPOConfig, e3_settings
from e3core.adapters.trl.history import HistoryCsv
from e3core.advantages import group_advantages, group_loss_weights
from e3core.checkpoint_io import atomic_torch_save, load_state_file
from e3core.prompt_keys import prompt_key
from e3core.resume import load_scheduler_state
from e3core.scheduler import E3Scheduler

__all__ = [
    "DEFAULT_PROMPT_ID_COLUMN",
    "LAST_VALUE_METRICS",
    "SCHEDULER_FILE",
    "E3GRPOTrainer",
    "EpochRepeatSampler",
    "atomic_torch_save",
    "build_scheduler",
    "default_config",
    "normalize_then_sum_advantages",
    "set_fused_head_temperature",
]

logger = logging.getLogger(__name__)

SCHEDULER_FILE = "e3_scheduler.pt"
"""Name of the scheduler state file inside a TRL checkpoint folder."""

DEFAULT_PROMPT_ID_COLUMN = "e3_prompt_id"
"""The id column used, when the dataset has it, while ``e3_prompt_id_column`` is None."""

LAST_VALUE_METRICS = frozenset(
    {
        "e3/step",
        "e3/epoch",
        "e3/entropy_skipped",
        "e3/tracked_prompts",
        "e3/min_per_prompt",
        "e3/max_per_prompt",
        "e3/temperature",
        "e3/target_entropy",
        "e3/prior_alpha",
        "e3/prior_beta",
        "e3/prior_mass_never",
        "e3/prior_mass_always",
        "e3/prior_mean",
    }
)
"""``e3/`` metrics that are counters or scheduler state: TRL's logger gets their last value in
the logging window, not the window's mean (the other ``e3/`` metrics are per-step measurements
and are averaged, as TRL averages its own)."""

_TRAIN = "train"
_EPS = 1e-4  # TRL's epsilon in its advantage denominators


def _fused_head_cell(model: torch.nn.Module) -> Any:
    """The closure cell holding the temperature of TRL's fused LM head on ``model.forward``.

    Wrappers that ``accelerate`` adds around ``forward`` (fp32 output conversion and autocast
    under mixed precision) are followed through ``__wrapped__`` and callables in their closures.
    """
    pending: list[Any] = [model.forward]
    seen: set[int] = set()
    while pending:
        fn = pending.pop()
        fn = getattr(fn, "__func__", fn)
        if id(fn) in seen or len(seen) > 32:
            continue
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        closure = getattr(fn, "__closure__", None) or ()
        names = () if code is None else code.co_freevars
        if "temperature" in names and "original_forward" in names:
            return closure[names.index("temperature")]
        if getattr(fn, "__wrapped__", None) is not None:
            pending.append(fn.__wrapped__)
        for cell in closure:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value) and not isinstance(value, torch.nn.Module):
                pending.append(value)
    raise RuntimeError(
        "the model's forward is not TRL's fused LM head (add_fused_lm_head), so its "
        "temperature cannot be set; e3core's TRL adapter supports trl==1.16"
    )


def set_fused_head_temperature(model: torch.nn.Module, temperature: float) -> None:
    """Set the temperature of the fused LM head TRL patched onto ``model``.

    TRL 1.16's ``add_fused_lm_head`` keeps the temperature in the closure of the patched
    ``forward``; the closure cell is rewritten in place, so the model, its optimiser state and
    any wrapper (DDP, PEFT, accelerate's mixed-precision forward) stay as they are.

    Args:
        model: The unwrapped model whose ``forward`` TRL patched.
        temperature: The new temperature (> 0).

    Raises:
        RuntimeError: The model's forward is not TRL's fused head (a TRL version e3core does not
            know).
    """
    _fused_head_cell(model).cell_contents = float(temperature)


def fused_head_temperature(model: torch.nn.Module) -> float:
    """The temperature in the closure of TRL's fused LM head (see set_fused_head_temperature)."""
    return float(_fused_head_cell(model).cell_contents)


class EpochRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` whose shuffled order depends on ``(seed, epoch)`` only.

    TRL's sampler seeds its generator once and draws a new permutation at every pass, so a
    run resumed in data epoch :math:`e > 0` (a new sampler) would replay epoch 0's order. Here
    pass :math:`e` is drawn from a generator seeded with ``seed + e``, so epoch 0 is exactly
    TRL's order and any epoch's order can be reproduced. ``set_epoch`` (called by Transformers
    and Accelerate before each pass) selects the epoch; without it, each pass takes the next.
    With ``seed=None`` the order is not reproducible (as TRL's).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw epoch ``epoch``'s order."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(int(self.seed) + epoch)
        yield from super().__iter__()


def build_scheduler(
    args: E3GRPOConfig,
    *,
    vocab_size: int,
    total_steps: int | None,
    steps_per_epoch: int | None,
) -> E3Scheduler:
    """The ``E3Scheduler`` an ``E3GRPOConfig`` describes (through :func:`e3_settings`).

    Args:
        args: The config.
        vocab_size: The model's vocabulary size (the E3 temperature rule's :math:`V`).
        total_steps: Generation steps in the run, for the annealed target (None: no annealing).
        steps_per_epoch: Generation steps per epoch (``args.e3_steps_per_epoch`` wins).
    """
    if args.e3_anneal_final_ratio is not None and total_steps is None:
        raise ValueError(
            "e3_anneal_final_ratio needs the run's length: set max_steps, or use a sized dataset"
        )
    return e3_settings(args).build_scheduler(
        args.num_generations,
        vocab_size=vocab_size,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        seed=args.seed,
        prefix=PREFIX,
    )


def default_config(model: Any) -> E3GRPOConfig:
    """The ``E3GRPOConfig`` used when no ``args`` are given: every default, in ``<model>-E3GRPO``.

    As TRL names its default ``GRPOConfig``'s ``output_dir`` after the model (``<model>-GRPO``),
    the output folder is the last path part of the model id (``model`` itself when it is a
    string, else ``model.config._name_or_path``) followed by ``-E3GRPO``.
    """
    if isinstance(model, str):
        name = model
    else:
        name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    return E3GRPOConfig(output_dir=f"{name.rstrip('/').split('/')[-1]}-E3GRPO")


try:  # images arrive as PIL images when the dataset decodes them
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - Pillow comes with TRL's dependencies
    _PILImage = None


def _blake(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _canonical(value: Any, where: str) -> Any:
    """``value`` with every image, array and byte string replaced by a digest of its content.

    Strings, numbers, None, dicts and lists are kept as they are, so a text prompt's id is
    :func:`~e3core.prompt_keys.prompt_key` of the prompt itself. PIL images are digested from
    their mode, size, palette and pixel bytes; arrays and tensors from dtype, shape and bytes.

    Raises:
        ValueError: ``value`` holds an object whose content cannot be digested stably.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": _blake(bytes(value))}
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            return [_canonical(v, where) for v in arr.tolist()]
        head = f"{arr.dtype.str}{arr.shape}".encode()
        return {"array": _blake(head, arr.tobytes())}
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous().reshape(-1)
        head = f"{t.dtype}{tuple(value.shape)}".encode()
        return {"array": _blake(head, t.view(torch.uint8).numpy().tobytes())}
    if _PILImage is not None and isinstance(value, _PILImage.Image):
        palette = value.getpalette() if value.mode in ("P", "PA") else None
        head = f"{value.mode}{value.size}{palette}".encode()
        return {"image": _blake(head, value.tobytes())}
    raise ValueError(
        f"the row's {where!r} holds a {type(value).__module__}.{type(value).__qualname__}, which "
        "e3core cannot hash stably into a prompt id: give the dataset an id column and name it "
        f"in e3_prompt_id_column (or call it {DEFAULT_PROMPT_ID_COLUMN!r})"
    )


def _row_images(row: Mapping[str, Any]) -> list[Any]:
    """The row's images, digested: ``images`` (a list) or ``image`` (one), as TRL reads them."""
    if row.get("images") is not None:
        images = row["images"]
        field = "images"
    elif row.get("image") is not None:
        images, field = [row["image"]], "image"
    else:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    return [_canonical(image, field) for image in images]


def _prompt_key(
    row: Mapping[str, Any],
    column: str | None,
    *,
    required: bool = False,
    images: bool = True,
) -> Any:
    """A row's prompt identity: its id column, else a 63-bit hash of its prompt and images.

    The fields that make the identity, in order:

    1. ``row[column]`` when ``column`` is set and the row has a non-None value there (an id
       column: nothing else is read).
    2. Otherwise :func:`~e3core.prompt_keys.prompt_key` of the ``prompt`` (a string or a chat)
       together with digests of the row's images: the ``images`` field (a list) or the ``image``
       field, and images inside chat messages. A row without images keys on its prompt alone,
       exactly as before images were taken into account.

    Args:
        row: One dataset row as TRL passes it.
        column: The id column (None: hash).
        required: The column was named explicitly: a row without a value there is an error.
        images: Include the ``image``/``images`` fields (False: the cheaper key used only to
            check that rows repeat in order).

    Raises:
        ValueError: ``required`` and the row has no value in ``column``, or the row holds an
            object that cannot be hashed stably.
    """
    if column is not None:
        value = row.get(column)
        if value is not None:
            return value.item() if hasattr(value, "item") else value
        if required:
            raise ValueError(
                f"e3_prompt_id_column={column!r}: a training row has no value in that column "
                f"(the row's fields: {sorted(row)})"
            )
    prompt = _canonical(row.get("prompt"), "prompt")
    digests = _row_images(row) if images else []
    if not digests:
        return prompt_key(prompt)
    return prompt_key({"prompt": prompt, "images": digests})


def _dataset_columns(dataset: Any) -> list[str] | None:
    """The dataset's column names, or None where they are not known before iterating."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def normalize_then_sum_advantages(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    group_ids: Any,
    *,
    baseline: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""TRL's ``multi_objective_aggregation="normalize_then_sum"`` over groups of any size.

    Each reward function's rewards are normalised within their prompt group,
    :math:`z_{jk} = (r_{jk} - b_{jk}) / (\sigma_{gk} + 10^{-4})`, with :math:`b_{jk}` the group
    mean :math:`\bar r_{gk}` (``baseline="mean"``, TRL's) or the leave-one-out mean
    (``"leave_one_out"``, see :func:`e3core.group_advantages`) (unbiased
    :math:`\sigma`, over the rows function :math:`k` scored; 0 in a group of one or of equal
    rewards), summed with the reward weights, :math:`s_j = \sum_k w_k z_{jk}`, and the sums are
    normalised once more over the whole batch, :math:`A_j = (s_j - \bar s) / (\sigma_s +
    10^{-4})`, as TRL 1.16 does for fixed groups (where it ignores ``scale_rewards``). Rows no
    function scored (all NaN) get :math:`A_j = 0` and stay out of the batch statistics.

    Args:
        rewards_per_func: ``(N, K)`` rewards, NaN where a function returned None.
        weights: ``(K,)`` reward weights.
        group_ids: ``N`` group labels (the prompt of each row).
        baseline: ``"mean"`` or ``"leave_one_out"``.

    Returns:
        The ``(N,)`` advantages and the batch standard deviation :math:`\sigma_s` (a 0-d
        tensor: NaN when fewer than two rows were scored, 0 for a batch of one row, as TRL).
    """
    if rewards_per_func.dim() != 2:
        raise ValueError(
            f"rewards_per_func must be (N, K), got shape {tuple(rewards_per_func.shape)}"
        )
    n, k = rewards_per_func.shape
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
    device = rewards_per_func.device
    gids = torch.as_tensor(np.asarray(group_ids), device=device)
    if gids.shape != (n,):
        raise ValueError(f"group_ids must have shape ({n},), got {tuple(gids.shape)}")
    w = weights.to(device=device, dtype=rewards_per_func.dtype)
    summed = torch.zeros(n, dtype=rewards_per_func.dtype, device=device)
    for f in range(k):
        column = rewards_per_func[:, f]
        ok = ~torch.isnan(column)
        if bool(ok.any()):
            z = group_advantages(column[ok], gids[ok], baseline=baseline, scale="std", eps=_EPS)
            summed[ok] += w[f] * z.to(summed)
    scored = ~torch.isnan(rewards_per_func).all(dim=1)
    advantages = torch.zeros_like(summed)
    if n == 1:
        return advantages, torch.zeros((), dtype=summed.dtype, device=device)
    if int(scored.sum()) < 2:
        return advantages, torch.full((), float("nan"), dtype=summed.dtype, device=device)
    s = summed[scored]
    std = s.std()
    advantages[scored] = (s - s.mean()) / (std + _EPS)
    return advantages, std


class E3GRPOTrainer(GRPOTrainer):
    r"""``GRPOTrainer`` that spends each generation step's rollouts where they teach most.

    Takes the same arguments as ``GRPOTrainer`` with an :class:`E3GRPOConfig` as ``args`` (None:
    :func:`default_config`, every default, in ``<model>-E3GRPO``), and optionally a ready
    ``scheduler`` (then the config's ``e3_`` allocation and controller settings are not used).
    See the module docstring for the per-step loop.

    Prompt identity: a prompt's id is its value in ``e3_prompt_id_column`` (which must then be
    a column of ``train_dataset``); with ``e3_prompt_id_column=None``, the column
    ``e3_prompt_id`` if the dataset has it, else a hash of the row's ``prompt`` together with
    its images (``image``/``images`` fields and images inside chat messages), so the same text
    with different images is two prompts. A row holding an object that cannot be hashed stably
    is refused (give it an id column).

    Metrics file: with ``e3_history_file`` set (default ``e3_history.csv``, relative to
    ``output_dir``), the main process appends one row per generation step as soon as it is
    scored: ``global_step``, a running ``generation`` index, the ``e3/`` metrics, the
    space-separated ``counts`` and the mean ``reward``. A fresh (not resumed) run overwrites
    an existing file; a run resumed from a checkpoint first drops the rows at or after the
    checkpoint's ``global_step``, so after a crash and a resume the file holds every step once.

    Attributes:
        e3_history: One dict per generation step of this process's run: the ``e3/`` metrics,
            the counts, the temperature and the rewards' mean, for reports and plots.
    """

    def __init__(
        self,
        model: Any,
        reward_funcs: Any,
        args: E3GRPOConfig | None = None,
        *more: Any,
        scheduler: E3Scheduler | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = default_config(model)
        if not isinstance(args, E3GRPOConfig):
            raise TypeError(
                f"args must be an E3GRPOConfig (GRPOConfig plus the e3_ settings), got "
                f"{type(args).__name__}"
            )
        if scheduler is not None and not isinstance(scheduler, E3Scheduler):
            raise TypeError(f"scheduler must be an E3Scheduler, got {type(scheduler).__name__}")
        super().__init__(model, reward_funcs, args, *more, **kwargs)
        if scheduler is not None and scheduler.rollouts_per_prompt != self.num_generations:
            raise ValueError(
                f"scheduler.rollouts_per_prompt ({scheduler.rollouts_per_prompt}) must equal "
                f"num_generations ({self.num_generations})"
            )
        if self.args.e3_enabled:
            self._e3_check_supported()
        self._e3_id_column = self._e3_resolve_id_column()
        self._e3_scheduler: E3Scheduler | None = scheduler
        self._e3_scheduler_from_config = scheduler is None
        self._e3_entropies: list[float] = []
        self._e3_rewards: torch.Tensor | None = None
        self._e3_generation = 0
        self._e3_resume_step: int | None = None
        self._e3_csv: HistoryCsv | None = None
        if self.args.e3_history_file is not None:
            self._e3_csv = HistoryCsv(os.path.join(self.args.output_dir, self.args.e3_history_file))
        self._e3_csv_started = False
        self.e3_history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    def _e3_check_supported(self) -> None:
        args = self.args
        if self.use_vllm and args.vllm_mode == "server":
            raise ValueError(
                "vllm_mode='server' asks the server for a fixed n per prompt, so per-prompt counts "
                "cannot be honoured: use vllm_mode='colocate' or e3_enabled=False"
            )
        if args.multi_objective_aggregation not in ("sum_then_normalize", "normalize_then_sum"):
            raise ValueError(
                f"multi_objective_aggregation={args.multi_objective_aggregation!r} is not "
                "supported with E3: use 'sum_then_normalize' or 'normalize_then_sum'"
            )
        if args.e3_controller != "none" and "temperature" in (args.generation_kwargs or {}):
            raise ValueError(
                "generation_kwargs sets 'temperature', which would override the controller's: "
                "remove it or set e3_controller='none'"
            )

    def _e3_resolve_id_column(self) -> str | None:
        """The id column to read: the explicit one (which must exist), else the default if any.

        Raises:
            ValueError: ``e3_prompt_id_column`` names a column the training dataset lacks.
        """
        column = self.args.e3_prompt_id_column
        names = _dataset_columns(self.train_dataset)
        if column is None:
            if names is not None and DEFAULT_PROMPT_ID_COLUMN not in names:
                return None
            return DEFAULT_PROMPT_ID_COLUMN  # used where a row has it
        if names is not None and column not in names:
            raise ValueError(
                f"e3_prompt_id_column={column!r} is not a column of the training dataset "
                f"(its columns: {names}): add the column, or set e3_prompt_id_column=None to use "
                f"{DEFAULT_PROMPT_ID_COLUMN!r} when present and otherwise a hash of the prompt "
                "and its images"
            )
        return column

    def _set_signature_columns_if_needed(self) -> None:
        """TRL's columns plus the id column, so ``remove_unused_columns=True`` keeps it."""
        super()._set_signature_columns_if_needed()
        column = getattr(self, "_e3_id_column", None) or self.args.e3_prompt_id_column
        if column is not None and column not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, column]

    def _e3_generation_steps(self, optimizer_steps: int) -> int:
        per_generation = self.args.steps_per_generation * self.num_iterations
        ga = self.args.gradient_accumulation_steps
        return max(1, math.ceil(optimizer_steps * ga / per_generation))

    def _e3_steps_per_epoch(self) -> int | None:
        try:
            size = len(self.train_dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
        prompts_per_step = self.args.generation_batch_size // self.num_generations
        return max(1, size // prompts_per_step)

    @property
    def e3_scheduler(self) -> E3Scheduler:
        """The scheduler (built on first use, when the run's length is known)."""
        if self._e3_scheduler is None:
            max_steps = getattr(self.state, "max_steps", 0) or 0
            total = self._e3_generation_steps(max_steps) if max_steps > 0 else None
            self._e3_scheduler = build_scheduler(
                self.args,
                vocab_size=int(self.model.config.get_text_config().vocab_size),
                total_steps=total,
                steps_per_epoch=self._e3_steps_per_epoch(),
            )
        return self._e3_scheduler

    # ------------------------------------------------------------------ temperature
    def _e3_models(self) -> list[torch.nn.Module]:
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        models = [model]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        return models

    def set_temperature(self, temperature: float) -> None:
        """Sample and train at ``temperature`` from the next generation on (all three places)."""
        value = float(temperature)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        self.temperature = value
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.temperature = value
        kwargs = getattr(self, "generation_kwargs", None)
        if isinstance(kwargs, dict) and "temperature" in kwargs:
            kwargs["temperature"] = value
        if self.use_vllm:
            self.vllm_generation.temperature = value
        for model in self._e3_models():
            set_fused_head_temperature(model, value)

    # ------------------------------------------------------------------ the step
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        """TRL's rewards (gathered over processes), kept for the E3 advantages."""
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._e3_rewards = rewards_per_func
        return rewards_per_func

    def _compute_loss(self, model, inputs):  # type: ignore[no-untyped-def]
        """TRL's loss; the entropy it logs is kept for the temperature controller."""
        loss = super()._compute_loss(model, inputs)
        if self.model.training and self._metrics[_TRAIN]["entropy"]:
            self._e3_entropies.append(float(self._metrics[_TRAIN]["entropy"][-1]))
        return loss

    def _e3_step_entropy(self) -> float | None:
        """The mean entropy of the micro-batches since the last generation (then forgotten).

        A micro-batch whose tokens are all masked has no entropy (NaN or 0) and is left out of
        the mean; when none has one, the step's entropy is None, which the scheduler skips and
        counts (``e3/entropy_skipped``).
        """
        valid = [h for h in self._e3_entropies if math.isfinite(h) and h > 0]
        self._e3_entropies.clear()
        return float(np.mean(valid)) if valid else None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        scheduler = self.e3_scheduler
        g = self.num_generations
        metrics: dict[str, float] = {}
        if self._e3_entropies:  # the updates since the last generation (none before the first)
            metrics.update(scheduler.observe_entropy(self._e3_step_entropy()))

        rows = gather_object(inputs)
        if len(rows) % g:
            raise RuntimeError(
                f"the gathered generation batch has {len(rows)} rows, not a multiple of "
                f"num_generations={g}"
            )
        column = self._e3_id_column
        required = self.args.e3_prompt_id_column is not None
        num = len(rows) // g
        slots = [_prompt_key(rows[k * g], column, required=required) for k in range(num)]
        for k in range(num):  # a cheap check (images left out) that rows repeat in order
            first = _prompt_key(rows[k * g], column, required=required, images=False)
            if any(
                _prompt_key(row, column, required=required, images=False) != first
                for row in rows[k * g + 1 : (k + 1) * g]
            ):
                raise RuntimeError(
                    "TRL's sampler did not repeat each prompt num_generations times in a row; "
                    "E3GRPOTrainer relies on RepeatSampler's order"
                )
        if self.args.e3_enabled:
            plan = scheduler.plan(slots)
            payload = [plan.counts.tolist(), plan.temperature]
            broadcast_object_list(payload, from_process=0)
            counts = np.asarray(payload[0], dtype=np.int64)
            temperature = float(payload[1])
            if counts.sum() != len(rows):
                raise RuntimeError(f"allocated {counts.sum()} rollouts for {len(rows)} rows")
            self.set_temperature(temperature)
            expanded = [dict(rows[k * g]) for k in range(num) for _ in range(int(counts[k]))]
            rank = self.accelerator.process_index
            local = expanded[rank * len(inputs) : (rank + 1) * len(inputs)]
        else:
            counts = np.full(num, g, dtype=np.int64)
            local = inputs

        self._e3_rewards = None
        output = super()._generate_and_score_completions(local)
        if self._e3_rewards is None:
            raise RuntimeError("TRL did not compute rewards through _calculate_rewards")
        per_func = self._e3_rewards.detach()
        weights = self.reward_weights.to(per_func.device)
        rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        group_ids = np.repeat(np.arange(num), counts)
        scored = ~torch.isnan(rewards).cpu().numpy()

        if self.args.e3_enabled or self.args.e3_baseline != "mean":  # TRL's own: mean baseline
            self._e3_replace_advantages(output, per_func, rewards, group_ids, scored)

        r = rewards.cpu().double().numpy()
        metrics.update(
            scheduler.observe([slots[k] for k in range(num)], r[scored], group_ids[scored])
        )
        metrics["e3/unscored"] = float((~scored).sum())
        for key, value in metrics.items():
            self._metrics[_TRAIN][key].append(value)
        mean_reward = float(np.nanmean(r)) if scored.any() else float("nan")
        global_step = int(self.state.global_step)
        self.e3_history.append(
            {
                **metrics,
                "global_step": global_step,
                "counts": counts.tolist(),
                "reward": mean_reward,
            }
        )
        self._e3_generation += 1
        self._e3_write_history(
            {
                "global_step": global_step,
                "generation": self._e3_generation,
                **metrics,
                "counts": counts.tolist(),
                "reward": mean_reward,
            }
        )
        return output

    def _e3_replace_advantages(
        self,
        output: dict[str, Any],
        rewards_per_func: torch.Tensor,
        rewards: torch.Tensor,
        group_ids: np.ndarray,
        scored: np.ndarray,
    ) -> None:
        """Put the uneven-group advantages in ``output`` and fix the fixed-group logs.

        TRL computed ``output["advantages"]`` over fixed groups of ``num_generations`` rows;
        with E3's counts those are not the prompt groups, so they are recomputed over the
        gathered rewards (all processes) and this process's slice replaces TRL's, and the
        logged advantages and ``frac_reward_zero_std`` are recomputed to match.
        """
        advantages, zero_std = self._e3_advantages(rewards_per_func, rewards, group_ids, scored)
        rank = self.accelerator.process_index
        n_local = output["advantages"].shape[0]
        local_adv = advantages[rank * n_local : (rank + 1) * n_local]
        output["advantages"] = local_adv.to(output["advantages"])
        self._logs["advantages"].clear()
        self._logs["advantages"].extend(advantages.tolist())
        self._metrics[_TRAIN]["frac_reward_zero_std"][-1] = zero_std

    def _e3_advantages(
        self,
        rewards_per_func: torch.Tensor,
        rewards: torch.Tensor,
        group_ids: np.ndarray,
        scored: np.ndarray,
    ) -> tuple[torch.Tensor, float]:
        """Advantages over groups of any size matching TRL's, and ``frac_reward_zero_std``.

        ``sum_then_normalize`` follows ``scale_rewards`` (group std, batch std or none, TRL's
        eps of 1e-4) on the weighted sum ``rewards``; ``normalize_then_sum`` normalises each
        function per group, sums and normalises over the batch
        (:func:`normalize_then_sum_advantages`). Wherever TRL subtracts the group mean,
        ``e3_baseline`` decides the baseline (``mean``: TRL's GRPO; ``leave_one_out``: RLOO's
        mean of the group's other completions). ``e3_loss_weighting='prompt'`` then scales
        each prompt's advantages so that every prompt weighs the same.

        Args:
            rewards_per_func: ``(N, K)`` gathered rewards, NaN where a function returned None.
            rewards: ``(N,)`` their weighted sum, NaN for rows no function scored.
            group_ids: ``(N,)`` prompt positions.
            scored: ``(N,)`` bool, the rows some function scored.

        Returns:
            The ``(N,)`` advantages (0 for unscored rows) and the share of completions TRL's
            ``frac_reward_zero_std`` counts (rows in groups without reward spread for
            ``sum_then_normalize``; 1 or 0 by the batch spread for ``normalize_then_sum``, as
            TRL).
        """
        if self.multi_objective_aggregation == "normalize_then_sum":
            weights = self.reward_weights.to(rewards_per_func)
            advantages, std = normalize_then_sum_advantages(
                rewards_per_func, weights, group_ids, baseline=self.args.e3_baseline
            )
            zero = torch.isclose(std, torch.zeros_like(std))
            zero_std = float(zero.float())
        else:
            advantages = torch.zeros_like(rewards)
            zero_std = self._e3_zero_std_share(rewards, group_ids, scored)
            if scored.any():
                mask = torch.as_tensor(scored, device=rewards.device)
                r = rewards[mask]
                gids = torch.as_tensor(group_ids[scored], device=rewards.device)
                scale = self.scale_rewards
                baseline = self.args.e3_baseline
                if scale == "group":
                    adv = group_advantages(r, gids, baseline=baseline, scale="std", eps=_EPS)
                else:
                    adv = group_advantages(r, gids, baseline=baseline, scale="none")
                    if scale == "batch" and r.numel() > 1:
                        adv = adv / (r.std() + _EPS)
                advantages[mask] = adv
        if self.args.e3_loss_weighting == "prompt" and scored.any():
            mask = torch.as_tensor(scored, device=advantages.device)
            gids = torch.as_tensor(group_ids[scored], device=advantages.device)
            advantages[mask] = advantages[mask] * group_loss_weights(gids, mode="prompt").to(
                advantages
            )
        return advantages, zero_std

    @staticmethod
    def _e3_zero_std_share(
        rewards: torch.Tensor, group_ids: np.ndarray, scored: np.ndarray
    ) -> float:
        """Share of completions in groups with no reward spread (TRL's metric, any sizes)."""
        r = rewards.cpu().double().numpy()[scored]
        if not len(r):
            return 1.0
        g = group_ids[scored]
        size = np.bincount(g)
        low = np.full(len(size), np.inf)
        high = np.full(len(size), -np.inf)
        np.minimum.at(low, g, r)
        np.maximum.at(high, g, r)
        flat = (size < 2) | (high == low)
        return float(flat[g].mean())

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's ``log``, with :data:`LAST_VALUE_METRICS` reported as their last value.

        TRL averages every metric it collected since the last log (``logging_steps`` > 1 spans
        several generation steps); a counter such as ``e3/step`` would then read as the mean of
        the window. Those keys are cut to their last value first.
        """
        mode = _TRAIN if self.model.training else "eval"
        collected = self._metrics[mode]
        for key in LAST_VALUE_METRICS:
            values = collected.get(key)
            if values:
                del values[:-1]
        super().log(logs, start_time)

    def _e3_write_history(self, row: dict[str, Any]) -> None:
        """Append ``row`` to the metrics file (main process; see the class docstring)."""
        if self._e3_csv is None or not self.args.should_save:
            return
        if not self._e3_csv_started:
            self._e3_csv.start(self._e3_resume_step)
            self._e3_csv_started = True
        self._e3_csv.append(row)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        """TRL's ``train``; a fresh run starts a new metrics file, a resumed one trims it."""
        self._e3_resume_step = None
        self._e3_csv_started = False
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    def e3_state_dict(self) -> dict[str, Any]:
        """The adapter's resumable state, as plain data.

        The scheduler's state, the entropies measured since the last generation, the current
        temperature and generation index, and (when the scheduler was built from the config)
        the :class:`~e3core.settings.E3Settings` it was built from, as a dict, so that a resume
        can tell which settings changed (:meth:`e3_load_state_dict`).
        """
        state: dict[str, Any] = {
            "scheduler": self.e3_scheduler.state_dict(),
            "pending_entropies": list(self._e3_entropies),
            "temperature": float(self.temperature),
            "generation": self._e3_generation,
        }
        if self._e3_scheduler_from_config:
            state["settings"] = dataclasses.asdict(e3_settings(self.args))
        return state

    def e3_load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`e3_state_dict`: the checkpoint's state under the config's settings.

        The scheduler's state is loaded by :func:`e3core.resume.load_scheduler_state`, the one
        rule of every adapter: the config wins for every setting (bounds, decay, prior, gains,
        temperature bounds, target, allocator, refit cadence), the checkpoint for the state
        (counts, temperature, integral, step, epoch, generator); every applied difference is
        logged once, and a changed ``e3_controller`` (the state of one controller kind means
        nothing to another) is an error listing every difference. The trainer's temperature is
        the saved one, clamped into the config's temperature bounds (or the config's
        ``temperature`` when it changed and no controller runs).

        Raises:
            ValueError: The state misses keys, is invalid, or its controller kind differs from
                the config's.
        """
        missing = {"scheduler", "pending_entropies", "temperature", "generation"} - set(state)
        if missing:
            raise ValueError(f"the {SCHEDULER_FILE} state is missing keys {sorted(missing)}")
        scheduler = self.e3_scheduler
        from_config = self._e3_scheduler_from_config
        changes = load_scheduler_state(
            scheduler,
            state["scheduler"],
            saved_settings=state.get("settings") if from_config else None,
            settings=e3_settings(self.args) if from_config else None,
            prefix=PREFIX,
            names=TRL_NAMES,
            log=logger,
        )
        self._e3_entropies = [float(x) for x in state["pending_entropies"]]
        self._e3_generation = int(state["generation"])
        if self.args.e3_enabled:
            temperature = float(state["temperature"])
            if scheduler.controller is not None:
                low = scheduler.controller.min_temperature
                high = scheduler.controller.max_temperature
                temperature = min(max(temperature, low), high)
            elif "initial_temperature" in changes:
                temperature = scheduler.fixed_temperature
            self.set_temperature(temperature)

    def _save_checkpoint(self, model, trial):  # type: ignore[no-untyped-def]
        """Write ``e3_scheduler.pt`` first (atomically), then TRL's checkpoint.

        Transformers writes the model, the optimizer, the RNG states, then ``trainer_state.json``
        (which makes a folder a resumable checkpoint), then rotates old checkpoints away. The E3
        state goes into the folder before all of them, so a checkpoint that has
        ``trainer_state.json`` has its E3 state, and a crash while saving leaves at worst a
        folder without ``trainer_state.json`` (not resumable) and the previous checkpoints.
        """
        if self.args.should_save:
            folder = f"checkpoint-{self.state.global_step}"
            output_dir = os.path.join(self._get_output_dir(trial=trial), folder)
            os.makedirs(output_dir, exist_ok=True)
            atomic_torch_save(self.e3_state_dict(), os.path.join(output_dir, SCHEDULER_FILE))
        super()._save_checkpoint(model, trial)

    def _e3_generation_period(self) -> int:
        """Optimizer steps between two generations' boundaries: safe ``save_steps`` divide it.

        TRL generates every ``steps_per_generation * num_iterations`` micro-batches; an
        optimizer step is ``gradient_accumulation_steps`` of them, so a checkpoint at
        ``global_step`` is on a generation boundary when ``global_step`` is a multiple of the
        value returned.
        """
        per_generation = self.args.steps_per_generation * self.num_iterations
        ga = self.args.gradient_accumulation_steps
        return per_generation // math.gcd(per_generation, ga)

    def _load_optimizer_and_scheduler(self, checkpoint):  # type: ignore[no-untyped-def]
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        # Trainer loads the checkpoint's state (global_step) before this call
        step = int(self.state.global_step)
        period = self._e3_generation_period()
        if step % period:
            raise ValueError(
                f"cannot resume exactly from {checkpoint}: global_step={step} is inside a "
                f"generation cycle (TRL generates every steps_per_generation="
                f"{self.args.steps_per_generation} x num_iterations={self.num_iterations} "
                f"micro-batches, i.e. every {period} optimizer steps with "
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}) and TRL "
                "does not save the buffered generation batch. Resume from a checkpoint whose "
                f"step is a multiple of {period}, and set save_steps to a multiple of {period}"
            )
        self._e3_resume_step = step
        self._e3_csv_started = False
        path = os.path.join(checkpoint, SCHEDULER_FILE)
        if self.args.e3_resume_fresh:
            logger.warning(
                "e3_resume_fresh=True: the E3 scheduler starts fresh, %s is not read", path
            )
            return
        state = load_state_file(path, fresh_option="e3_resume_fresh=True")
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} holds a {type(state).__name__}, not an E3 state (a dict)")
        try:
            self.e3_load_state_dict(state)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        """TRL's ``RepeatSampler`` order, reshuffled per epoch from ``(seed, epoch)``.

        TRL's sampler seeds its generator once, so a run resumed in a later epoch would replay
        the first epoch's order; :class:`EpochRepeatSampler` draws epoch :math:`e`'s order from
        ``seed + e`` (epoch 0: TRL's order), and Transformers sets the epoch before each pass.
        """
        if dataset is None:
            dataset = self.train_dataset
        return EpochRepeatSampler(
            data_source=dataset,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )
