"""Kill tests of the TRL adapter (issue 14): SIGKILL a real training process, then resume.

Each run is a subprocess of ``trl_kill_run.py`` (the tiny Qwen2 of ``trl_tiny`` on CPU, 8
prompts, 2 prompts x 2 completions per optimizer step, 3 data epochs for steps_per_generation
1 and 2, 2 for num_iterations=2). A run is killed at a seeded moment during training, or while
it saves a checkpoint (the runner stalls there when told to: inside the atomic write of
``e3_scheduler.pt``, or after TRL's model, optimizer and RNG files but before
``trainer_state.json``). Then:

* every folder that Transformers would resume (it has ``trainer_state.json``) holds a loadable
  ``e3_scheduler.pt``, and the kill cost at most the checkpoint being written;
* a new process resumed from the latest such checkpoint finishes exactly as the uninterrupted
  run: the same ``e3_history.csv`` rows, per-step counts and temperatures, final E3 state
  (tracker counts, controller, step, epoch) and final parameters, bit for bit (CPU, one thread);
* a checkpoint inside a generation cycle is refused with a message giving the safe save_steps.

The uninterrupted reference runs (one per setting, checkpointing every step) and the runs to be
killed while saving start together with the module and share the cores with the first test, so
the file takes about as long as the seeded run and the resumes (one process each, most of it
importing Transformers and TRL).
"""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from e3core.adapters.trl.trainer import SCHEDULER_FILE

HERE = Path(__file__).parent
RUNNER = HERE / "trl_kill_run.py"
TRAINER_STATE = "trainer_state.json"
TIMEOUT = 300.0  # seconds for any one process (the CI machine is slow and shared)


@dataclass(frozen=True)
class Case:
    """A training setting and how its run is interrupted."""

    spg: int  # steps_per_generation
    iters: int  # num_iterations
    steps: int  # optimizer steps of the whole run
    save_steps: int  # on the generation boundary (a multiple of spg * iters)
    stall: str | None  # "e3_tmp:<step>" / "trl_files:<step>": killed while saving; None: seeded

    @property
    def argv(self) -> list[str]:
        return [str(x) for x in (self.spg, self.iters, self.steps, self.save_steps)]


# Steps per data epoch: 4 with steps_per_generation 1 or 2, 8 with num_iterations=2.
CASES = {
    # killed at a seeded moment (once step 5, 6 or 7 generated; the seed picks 7) in epoch 1:
    # resumes from checkpoint 6 (4 or 8 when the kill lands early or late)
    "spg1-iter1-seeded": Case(1, 1, 12, 2, None),
    # killed inside the atomic write of checkpoint 10's E3 state: resumes in epoch 2 (step 8)
    "spg2-iter1-e3tmp": Case(2, 1, 12, 2, "e3_tmp:10"),
    # killed after TRL wrote checkpoint 12's model, optimizer and RNG: resumes from 10 (epoch 1)
    "spg1-iter2-trlfiles": Case(1, 2, 16, 2, "trl_files:12"),
}


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("E3_KILL_")}
    path = os.pathsep.join(p for p in (str(HERE), base.get("PYTHONPATH")) if p)
    return {**base, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def start(out: Path, case: Case, *extra: str, **env_extra: str) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.txt").open("ab")
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(out), *case.argv, *extra],
        cwd=HERE,
        env=env(**env_extra),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Wait for a run that must complete, and load its ``result.pt``."""
    try:
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, (out / "log.txt").read_text()[-3000:]
    return torch.load(out / "result.pt", weights_only=False)


def history_rows(out: Path) -> list[dict[str, str]]:
    """The rows of ``e3_history.csv`` (a row being written by a killed process is skipped)."""
    path = out / "out" / "e3_history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [row for row in rows if row.get("counts")]


def kill_when(proc: subprocess.Popen[bytes], out: Path, ready: Callable[[], bool]) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends or stalls first."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail("the run ended before it was killed:\n" + log_tail(out))
            if time.monotonic() > deadline:
                pytest.fail("the run never reached the kill point:\n" + log_tail(out))
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def log_tail(out: Path) -> str:
    return (out / "log.txt").read_text(errors="replace")[-3000:]


def checkpoints(out: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[1]): p for p in (out / "out").glob("checkpoint-*")}


def assert_resumable_checkpoints_carry_their_e3_state(out: Path, case: Case) -> list[int]:
    """Every folder with ``trainer_state.json`` has a loadable E3 state; the steps of those.

    The state is the one of its step: checkpoint ``s`` follows the generations at optimizer
    steps ``0, p, 2p, ... < s`` (``p = steps_per_generation * num_iterations``).
    """
    resumable = []
    for step, folder in sorted(checkpoints(out).items()):
        if not (folder / TRAINER_STATE).exists():
            continue
        state = torch.load(folder / SCHEDULER_FILE, map_location="cpu", weights_only=True)
        generations = -(-step // (case.spg * case.iters))
        assert state["scheduler"]["step"] == state["generation"] == generations, folder
        resumable.append(step)
    return resumable


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """``a`` and ``b`` are equal, exactly (tensors, arrays, floats with NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: max diff {(a.double() - b.double()).abs().max()}"
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class Runs:
    """The processes that start with the module, so that they share the two cores.

    The uninterrupted reference runs (checkpointing every step, so that every checkpoint's
    state can be checked and a mid-cycle one resumed) and the runs to be killed while saving
    (they stall there until killed) run while the first test's run is killed and resumed.
    """

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        for name, case in CASES.items():
            self.procs[f"ref-{name}"] = start(root / f"ref-{name}", replace(case, save_steps=1))
            if case.stall is not None:
                self.procs[f"killed-{name}"] = start(
                    root / f"killed-{name}",
                    case,
                    E3_KILL_STALL=case.stall,
                    E3_KILL_SAVE_LIMIT="1",  # the previous checkpoint would be rotated away
                )

    def reference(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The reference run of case ``name``: its folder and result (waits for it)."""
        key = f"ref-{name}"
        if key not in self.results:
            self.results[key] = finish(self.procs[key], self.root / key)
        return self.root / key, self.results[key]

    def stalled(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        """The run of case ``name`` that stalls while saving: the process and its folder."""
        key = f"killed-{name}"
        return self.procs[key], self.root / key

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    started = Runs(tmp_path_factory.mktemp("runs"))
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_killed_run_resumes_exactly_from_its_latest_checkpoint(
    runs: Runs, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    if case.stall is None:
        out = tmp_path / "killed"
        # a seeded moment in epoch 1, once a checkpoint exists
        target = random.Random(f"issue-14-{name}").randint(5, 7)
        proc = start(out, case)

        def ready() -> bool:
            rows = history_rows(out)
            return bool(rows) and int(rows[-1]["global_step"]) >= target

        kill_when(proc, out, ready)
    else:
        where, stalled_step = case.stall.split(":")
        proc, out = runs.stalled(name)
        kill_when(proc, out, (out / "stalled").exists)
        folder = out / "out" / f"checkpoint-{stalled_step}"
        assert not (folder / TRAINER_STATE).exists()  # killed before the folder was complete
        if where == "e3_tmp":  # only the temporary file: the E3 state is not in place
            assert not (folder / SCHEDULER_FILE).exists()
            assert [p.name.startswith(f".{SCHEDULER_FILE}.") for p in folder.iterdir()] == [True]
        else:  # TRL's files were being written: the E3 state is already there, whole
            state = torch.load(folder / SCHEDULER_FILE, weights_only=True)
            assert state["generation"] == int(stalled_step) // (case.spg * case.iters)
            assert (folder / "rng_state.pth").is_file()

    resumable = assert_resumable_checkpoints_carry_their_e3_state(out, case)
    assert resumable, "the kill left no resumable checkpoint"
    latest = max(resumable)
    if case.stall is not None:  # save_total_limit=1: the previous checkpoint was not rotated
        assert latest == int(stalled_step) - case.save_steps
    assert latest % (case.spg * case.iters) == 0 and latest >= 4  # a later epoch than the first

    # resume in a new process, into the same folder, as a user would after a crash
    (out / "stalled").unlink(missing_ok=True)
    resumed = finish(start(out, case, str(checkpoints(out)[latest])), out)

    ref_out, ref = runs.reference(name)
    assert assert_resumable_checkpoints_carry_their_e3_state(ref_out, case) == list(
        range(1, case.steps + 1)
    )
    skip = sum(1 for row in ref["history"] if row["global_step"] < latest)
    assert 0 < skip < len(ref["history"])
    assert resumed["history"] == ref["history"][skip:]  # counts and temperatures, per step
    assert history_rows(out) == history_rows(ref_out)  # the file: every step once, in order
    assert_same(ref["e3_state"], resumed["e3_state"], "e3_state")  # tracker, controller, ...
    assert_same(ref["params"], resumed["params"], "params")


def test_a_checkpoint_inside_a_generation_cycle_is_refused(runs: Runs) -> None:
    name = "spg2-iter1-e3tmp"  # steps_per_generation=2: optimizer step 7 is mid-cycle
    ref_out, _ = runs.reference(name)
    out = ref_out.parent / "mid-cycle-resume"
    proc = start(out, CASES[name], str(checkpoints(ref_out)[7]))
    code = proc.wait(timeout=TIMEOUT)
    text = log_tail(out)
    assert code == 1, text
    assert "inside a generation cycle" in text and "global_step=7" in text, text
    assert "save_steps to a multiple of 2" in text, text
    assert not (out / "result.pt").exists()
