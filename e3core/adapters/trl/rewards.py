"""Verifiable rewards for TRL's ``GRPOTrainer``: exact match, math equivalence, or your own.

Every reward function here follows TRL's calling convention: it is called with keyword arguments
``prompts``, ``completions``, ``completion_ids`` and one list per dataset column (aligned with
``completions``, e.g. ``answer``), plus TRL extras such as ``trainer_state``, and returns one float
per completion (``None`` where the reward does not apply; TRL turns it into NaN). A completion is
a string for plain-text prompts, or a list of messages ``[{"role": "assistant", "content": ...}]``
for conversational prompts; both are accepted (see `completion_text`).

The reference answer is read from the column named by ``answer_column`` (``"answer"`` by default,
which is what `e3core.adapters.trl.data.load_prompt_dataset` produces).

Timeouts in `math_reward`: math-verify bounds its parsing and comparison time with
``signal.alarm``, which only works in the main thread of the main interpreter; called from any
other thread it raises ``ValueError`` instead of scoring. TRL calls synchronous reward functions
from the main thread of each training process, so there the timeout stays on (5 s per parse and per
comparison by default). From any other thread (a thread pool, an event loop in a daemon thread)
the reward switches math-verify's timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``),
since no signal can be used there; a pathological completion can then take as long as SymPy needs.
Run the reward in the main thread of a process when you need the bound.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from e3core._validation import _show

__all__ = [
    "REWARD_NAMES",
    "RewardFunc",
    "completion_text",
    "exact_reward",
    "load_reward",
    "make_exact_reward",
    "make_math_reward",
    "math_reward",
]

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float | None]]
"""A TRL reward function: ``f(prompts, completions, completion_ids, **columns) -> rewards``."""

REWARD_NAMES: tuple[str, ...] = ("exact", "math")
"""The built-in reward names that `load_reward` accepts besides ``"module:function"``."""

_LATEX_MARKERS = ("$", "\\boxed", "\\(", "\\[")


def completion_text(completion: Any) -> str:
    """Return the text of one completion, plain or conversational.

    Args:
        completion: A string (plain-text prompts); a list of message dicts (conversational
            prompts), whose last ``"assistant"`` message is used (the last message if none is from
            the assistant); a single message dict; or ``None`` (read as empty). A message's
            ``content`` may be a string, ``None``, or a list of parts ``{"type": "text",
            "text": ...}`` whose texts are joined.

    Returns:
        The completion's text (``""`` when there is none).

    Raises:
        TypeError: If ``completion`` has none of the forms above.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_text(completion)
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        if not all(isinstance(m, dict) for m in completion):
            raise TypeError(
                "completion must be a string or a list of message dicts, got a list holding "
                f"{sorted({type(m).__name__ for m in completion})}: {_show(completion)}"
            )
        assistant = [m for m in completion if m.get("role") == "assistant"]
        return _message_text(assistant[-1] if assistant else completion[-1])
    raise TypeError(
        "completion must be a string, a message dict or a list of message dicts, got "
        f"{type(completion).__name__}: {_show(completion)}"
    )


def _message_text(message: dict[str, Any]) -> str:
    """Return the text content of one chat message dict."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        ]
        return "".join(p for p in parts if isinstance(p, str))
    raise TypeError(
        "a message's content must be a string, None or a list of text parts, got "
        f"{type(content).__name__}: {_show(content)}"
    )


def _check_answer_column(answer_column: Any) -> str:
    """Return ``answer_column`` if it is a non-empty string, or raise naming it."""
    if not isinstance(answer_column, str):
        raise TypeError(
            f"answer_column must be a string (a dataset column name), got {_show(answer_column)}"
        )
    if not answer_column:
        raise ValueError("answer_column must be a non-empty column name, got ''")
    return answer_column


def _texts_and_answers(
    name: str,
    answer_column: str,
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    kwargs: dict[str, Any],
) -> tuple[list[str], list[Any]]:
    """Check one reward call's arguments; return the completion texts and the answers."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError(
            f"{name}: completions must be a list (one entry per completion), got "
            f"{type(completions).__name__}: {_show(completions)}"
        )
    if answer_column not in kwargs:
        columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
        raise ValueError(
            f"{name}: no column {answer_column!r} among the reward keyword arguments (the "
            f"dataset columns); got {columns}. Name the answer column with answer_column=..."
        )
    answers = kwargs[answer_column]
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
        raise TypeError(
            f"{name}: {answer_column} must be a list aligned with completions, got "
            f"{type(answers).__name__}: {_show(answers)}"
        )
    if len(answers) != len(completions):
        raise ValueError(
            f"{name}: {answer_column} has {len(answers)} entries but completions has "
            f"{len(completions)}; they must be aligned one to one"
        )
    if prompts is not None and len(prompts) != len(completions):
        raise ValueError(
            f"{name}: prompts has {len(prompts)} entries but completions has "
            f"{len(completions)}; they must be aligned one to one"
        )
    return [completion_text(c) for c in completions], list(answers)


def _named(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Give ``func`` the ``__name__`` and ``__qualname__`` ``name`` (TRL logs rewards by name)."""
    func.__name__ = name
    func.__qualname__ = name
    return func


def make_exact_reward(answer_column: str = "answer") -> RewardFunc:
    r"""Build an exact-match reward reading the reference answer from ``answer_column``.

    The reward of completion :math:`c` with answer :math:`a` is
    :math:`r = \mathbb{1}[\mathrm{strip}(c) = \mathrm{strip}(\mathrm{str}(a))]`, with
    ``None`` when the answer is ``None`` (the reward does not apply) and 0 for an empty or
    ``None`` completion.

    Args:
        answer_column: The dataset column (a keyword argument of the call) holding the answers.

    Returns:
        A TRL reward function named ``exact_reward``.

    Raises:
        TypeError: If ``answer_column`` is not a string.
        ValueError: If ``answer_column`` is empty.
    """
    column = _check_answer_column(answer_column)

    def reward(
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        texts, answers = _texts_and_answers("exact_reward", column, prompts, completions, kwargs)
        return [
            None if answer is None else float(text.strip() == str(answer).strip())
            for text, answer in zip(texts, answers, strict=True)
        ]

    reward.__doc__ = f"Exact-match reward (1.0 or 0.0) against column {column!r}."
    return _named(reward, "exact_reward")


def _check_timeout(timeout_seconds: Any) -> int | None:
    """Return ``timeout_seconds`` as a positive int or ``None``, or raise naming it."""
    if timeout_seconds is None:
        return None
    if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int):
        raise TypeError(
            "timeout_seconds must be a positive integer number of seconds (signal.alarm takes "
            f"whole seconds) or None, got {_show(timeout_seconds)}"
        )
    if timeout_seconds < 1:
        raise ValueError(f"timeout_seconds must be >= 1 or None, got {timeout_seconds}")
    return timeout_seconds


def _usable_timeout(timeout_seconds: int | None) -> int | None:
    """Return the timeout math-verify can use in this thread: ``None`` off the main thread."""
    if threading.current_thread() is threading.main_thread():
        return timeout_seconds
    return None


def _is_thread_signal_error(error: BaseException) -> bool:
    """Whether ``error`` is math-verify's refusal to use ``signal.alarm`` off the main thread."""
    return isinstance(error, ValueError) and "thread" in str(error)


def make_math_reward(
    answer_column: str = "answer", *, timeout_seconds: int | None = 5
) -> RewardFunc:
    r"""Build a math-equivalence reward (math-verify) reading answers from ``answer_column``.

    The answer is parsed as LaTeX: an answer without math delimiters (``$``, ``\boxed``,
    ``\(``, ``\[``) is wrapped as ``\boxed{answer}`` first (falling back to the bare text when
    that parses to nothing), so ``"1/2"``, ``"\frac{1}{2}"`` and ``"0.5"`` all work. The
    completion is parsed with math-verify's defaults (boxed answers first, then LaTeX, then plain
    expressions), and the reward is :math:`r = \mathbb{1}[\mathrm{verify}(a, c)]`. A parse
    failure, an error or a timeout gives 0.0, never an exception; a ``None`` answer gives
    ``None`` (the reward does not apply).

    Args:
        answer_column: The dataset column (a keyword argument of the call) holding the answers.
        timeout_seconds: math-verify's limit, in whole seconds, for each parse and each
            comparison, enforced with ``signal.alarm`` in the main thread; in any other thread no
            signal can be used, so the limit is switched off there (see the module docstring).
            ``None`` switches it off everywhere.

    Returns:
        A TRL reward function named ``math_reward``.

    Raises:
        TypeError: If ``answer_column`` is not a string or ``timeout_seconds`` not an int/None.
        ValueError: If ``answer_column`` is empty or ``timeout_seconds < 1``.
        ImportError: If math-verify is not installed.
    """
    column = _check_answer_column(answer_column)
    limit = _check_timeout(timeout_seconds)
    try:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException
    except ImportError as error:  # pragma: no cover - math-verify is in the [trl] extra
        raise ImportError(
            "math_reward needs math-verify: pip install math-verify (or, in an e3core clone, "
            "pip install -e '.[trl]')"
        ) from error

    def safe_parse(text: str) -> list[Any]:
        """Parse ``text`` with math-verify; ``[]`` on any failure."""
        try:
            return parse(text, parsing_timeout=_usable_timeout(limit))
        except ValueError as error:
            if not _is_thread_signal_error(error):
                logger.debug("math_reward: parse failed on %r", text[:200], exc_info=True)
                return []
            # Not the main thread of the main interpreter (e.g. a subinterpreter): no signals.
            try:
                return parse(text, parsing_timeout=None)
            except (Exception, TimeoutException):
                return []
        except (Exception, TimeoutException):
            logger.debug("math_reward: parse failed on %r", text[:200], exc_info=True)
            return []

    def safe_verify(gold: list[Any], pred: list[Any]) -> bool:
        """Compare parsed answers with math-verify; ``False`` on any failure."""
        try:
            return bool(verify(gold, pred, timeout_seconds=_usable_timeout(limit)))
        except ValueError as error:
            if not _is_thread_signal_error(error):
                logger.debug("math_reward: verify failed", exc_info=True)
                return False
            try:
                return bool(verify(gold, pred, timeout_seconds=None))
            except (Exception, TimeoutException):
                return False
        except (Exception, TimeoutException):
            logger.debug("math_reward: verify failed", exc_info=True)
            return False

    def parse_gold(answer: str) -> list[Any]:
        """Parse a reference answer, wrapping a bare expression so math-verify reads it."""
        text = answer.strip()
        if not text:
            return []
        if any(marker in text for marker in _LATEX_MARKERS):
            return safe_parse(text)
        return safe_parse(f"\\boxed{{{text}}}") or safe_parse(text)

    def reward(
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        texts, answers = _texts_and_answers("math_reward", column, prompts, completions, kwargs)
        golds: dict[str, list[Any]] = {}  # a group's completions share one answer: parse it once
        out: list[float | None] = []
        for text, answer in zip(texts, answers, strict=True):
            if answer is None:
                out.append(None)
                continue
            key = str(answer)
            if key not in golds:
                golds[key] = parse_gold(key)
            gold = golds[key]
            if not gold or not text.strip():
                out.append(0.0)
                continue
            pred = safe_parse(text)
            out.append(float(bool(pred) and safe_verify(gold, pred)))
        return out

    reward.__doc__ = f"Math-equivalence reward (1.0 or 0.0, math-verify) against column {column!r}."
    return _named(reward, "math_reward")


exact_reward: RewardFunc = make_exact_reward()
"""Exact-match reward against the ``answer`` column (see `make_exact_reward`)."""

math_reward: RewardFunc = make_math_reward()
"""Math-equivalence reward against the ``answer`` column (see `make_math_reward`)."""


def load_reward(spec: str, *, answer_column: str = "answer") -> RewardFunc:
    """Return the reward function named by ``spec``.

    Args:
        spec: ``"exact"`` (`make_exact_reward`), ``"math"`` (`make_math_reward`), or
            ``"module:function"`` to import ``module`` and take its attribute ``function``
            (a dotted path such as ``"pkg.rewards:Scorer.score"`` is followed), or TRL's form
            ``"package.module.function"`` (the longest importable prefix is the module). The
            attribute is returned as is when it has a ``__name__``; a callable without one (a
            callable instance, a ``functools.partial``) is wrapped in a function named after the
            last part of the attribute path, async when the callable is async.
        answer_column: The column holding the answers, for ``"exact"`` and ``"math"``; a
            ``"module:function"`` reward reads its own keyword arguments, so it ignores it.

    Returns:
        A callable with a ``__name__``, in TRL's reward-function signature.

    Raises:
        TypeError: If ``spec`` is not a string, or it names a class or a non-callable object.
        ValueError: If ``spec`` is malformed, its module cannot be found, or the module has no
            such attribute.
    """
    if not isinstance(spec, str):
        raise TypeError(
            f"spec must be a string: one of {REWARD_NAMES} or 'module:function', got {_show(spec)}"
        )
    text = spec.strip()
    if text == "exact":
        return make_exact_reward(answer_column)
    if text == "math":
        return make_math_reward(answer_column)
    if ":" not in text and "." in text:
        text = _dotted_to_colon(text, spec)
    if text.count(":") != 1:
        raise ValueError(
            f"spec must be one of {REWARD_NAMES}, 'module:function' or 'package.module.function', "
            f"got {_show(spec)}"
        )
    module_name, attr_path = (part.strip() for part in text.split(":"))
    if not module_name or not attr_path:
        raise ValueError(
            f"spec must be 'module:function' with both parts non-empty, got {_show(spec)}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ValueError(
                f"spec={spec!r}: no module named {module_name!r} (is it installed, or on "
                "sys.path / PYTHONPATH?)"
            ) from error
        raise  # the module exists but one of its own imports is missing: show that error
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"spec={spec!r}: {walked!r} has no attribute {part!r}")
        obj = getattr(obj, part)
        walked = f"{walked}.{part}"
    if inspect.isclass(obj):
        raise TypeError(
            f"spec={spec!r} names the class {obj.__name__}; give a function, or an instance "
            "whose __call__ is the reward"
        )
    if not callable(obj):
        raise TypeError(
            f"spec={spec!r} names a {type(obj).__name__}, which is not callable; a reward must "
            "be a function f(prompts, completions, completion_ids, **columns) -> list[float]"
        )
    if isinstance(getattr(obj, "__name__", None), str):
        return obj
    return _named(_wrap_unnamed(obj), attr_path.split(".")[-1])


def _dotted_to_colon(text: str, spec: str) -> str:
    """``"pkg.mod.func"`` as ``"pkg.mod:func"``: the longest importable prefix is the module."""
    parts = text.split(".")
    if not all(part.strip() for part in parts):
        raise ValueError(f"spec={spec!r}: a dotted path needs a name between every two dots")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # not a module: try a shorter prefix
            raise  # the module exists but one of its own imports is missing: show that error
        return f"{module_name}:{'.'.join(parts[cut:])}"
    raise ValueError(
        f"spec={spec!r}: no module named {parts[0]!r} (is it installed, or on sys.path / "
        "PYTHONPATH?)"
    )


def _wrap_unnamed(obj: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a callable without ``__name__`` in a plain (or async) function that forwards to it."""
    target: Any = obj
    while isinstance(target, functools.partial):
        target = target.func
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - the method itself, not callability
    )
    if is_async:

        async def forward_async(*args: Any, **kwargs: Any) -> Any:
            return await obj(*args, **kwargs)

        return forward_async

    def forward(*args: Any, **kwargs: Any) -> Any:
        return obj(*args, **kwargs)

    return forward
