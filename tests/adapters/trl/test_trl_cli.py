"""The command line: the embedded demo (shortened), a user's model and dataset, and the recipes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from trl_tiny import tiny_model, tiny_tokenizer

from e3core.adapters.trl import cli
from e3core.adapters.trl.cli import DEMO_DEFAULTS, CliError, _parse, main, run
from e3core.adapters.trl.config import E3GRPOConfig

RECIPES = Path(__file__).resolve().parents[3] / "adapters" / "trl"
SMALL = [
    "--demo_warm_start_seconds", "1",
    "--max_steps", "3",
    "--per_device_train_batch_size", "16",
    "--num_generations", "4",
    "--demo_train_prompts", "32",
    "--demo_eval_prompts", "8",
    "--eval_k", "2",
    "--logging_steps", "1",
    "--disable_tqdm", "true",
    "--use_cpu", "true",
]  # fmt: skip


def test_demo_end_to_end_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = main([*SMALL, "--output_dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "pass@1 before" in printed and "pass@2 after" in printed
    assert "temperature" in printed and str(tmp_path / "e3_history.csv") in printed
    for name in ("before", "after"):
        rows = {r["bucket"]: r for r in result[name].rows}
        assert rows["all"]["prompts"] == 8
        assert all(0.0 <= r["pass@1"] <= r["pass@2"] <= 1.0 for r in rows.values())
    with open(result["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3
    for row in table:
        counts = [int(c) for c in row["counts"].split()]
        assert sum(counts) == 16 and min(counts) >= 2
    assert result["png"].stat().st_size > 1000


def test_user_model_and_local_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "e3_cli_extra_reward.py").write_text(
        "def half(completions, **kwargs):\n    return [0.5 for _ in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "data.jsonl"
    rows = [{"question": f"{a}+{b}=", "solution": a + b} for a in range(4) for b in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = main(
        [
            "--model_name_or_path", str(model_dir),
            "--dataset_name", str(data),
            "--prompt_column", "question",
            "--answer_column", "solution",
            "--reward_funcs", "exact", "e3_cli_extra_reward:half",
            "--reward_weights", "1.0", "0.5",
            "--max_steps", "2",
            "--per_device_train_batch_size", "8",
            "--num_generations", "4",
            "--max_completion_length", "3",
            "--output_dir", str(tmp_path / "out"),
            "--report_to", "none",
            "--save_strategy", "no",
            "--use_cpu", "true",
            "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    assert len(result["history"]) == 2
    trainer = result["trainer"]
    assert [f.__name__ for f in trainer.reward_funcs] == ["exact_reward", "half"]
    assert trainer.reward_weights.tolist() == [1.0, 0.5]
    assert (tmp_path / "out" / "e3_history.csv").is_file()
    assert (tmp_path / "out" / "config.json").is_file()  # the trained model was saved


def test_demo_recipe_matches_embedded_defaults(tmp_path: Path) -> None:
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    for key, value in DEMO_DEFAULTS.items():
        assert recipe[key] == value, key
    default = E3GRPOConfig(output_dir=str(tmp_path), use_cpu=True)
    for key, value in recipe.items():
        # Other e3_ settings in the recipe are written-out defaults.
        if key.startswith("e3_") and key not in DEMO_DEFAULTS:
            assert getattr(default, key) == value, key
    # The embedded demo actually runs with them (CLI parsing applies DEMO_DEFAULTS).
    _, config = _parse(["--output_dir", str(tmp_path)])
    for key, value in recipe.items():
        if key not in {"output_dir", "use_cpu", "report_to"}:  # report_to: "none" parses to []
            assert getattr(config, key) == value, key


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml", "recommended.yaml"])
def test_recipes_parse(tmp_path: Path, name: str) -> None:
    # GPU-only settings are turned off so the recipe parses on this CPU machine
    cpu = ["--bf16", "false", "--use_vllm", "false", "--gradient_checkpointing", "false"]
    script, config = _parse(["--config", str(RECIPES / name), *cpu, "--output_dir", str(tmp_path)])
    assert isinstance(config, E3GRPOConfig)
    if name == "paper.yaml":
        assert (config.e3_allocator, config.e3_controller) == ("rank", "e3")
        assert (config.e3_widen_min, config.e3_widen_max, config.e3_widen_per_epoch) == (4, 12, 2)
        assert config.generation_batch_size % config.num_generations == 0
        assert script.reward_funcs == ["math"] and script.chat


def test_bad_flag_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="e3_allocator"):
        _parse(["--e3_allocator", "greedy", "--output_dir", str(tmp_path)])


# --------------------------------------------------------------------------- the front door


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--e3_anneal_final_ratio", "--reward_funcs", "--traceback", "--learning_rate"):
        assert flag in text
    assert "40%" in text  # a bare % in a help text no longer breaks argparse


def _user(tmp_path: Path, *extra: str, equals: bool = False) -> list[str]:
    pairs = [
        ("--model_name_or_path", "some/model"),
        ("--dataset_name", str(tmp_path / "data.jsonl")),
        ("--output_dir", str(tmp_path / "out")),
        *zip(extra[::2], extra[1::2]),
    ]
    if equals:
        return [f"{flag}={value}" for flag, value in pairs]
    return [item for pair in pairs for item in pair]


def test_equals_and_space_forms_parse_the_same(tmp_path: Path) -> None:
    extra = ("--learning_rate", "1e-5", "--e3_allocator", "rank", "--use_cpu", "true")
    spaced = _parse(_user(tmp_path, *extra))
    equals = _parse(_user(tmp_path, *extra, equals=True))
    assert spaced[0] == equals[0]
    assert spaced[1].to_dict() == equals[1].to_dict()
    recipe = str(RECIPES / "demo.yaml")
    by_space = _parse(["--config", recipe])[1].to_dict()
    assert by_space == _parse([f"--config={recipe}"])[1].to_dict()


@pytest.mark.parametrize("equals", [False, True])
def test_a_user_run_never_gets_demo_defaults(tmp_path: Path, equals: bool) -> None:
    script, config = _parse(_user(tmp_path, "--use_cpu", "true", equals=equals))
    default = E3GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True)
    assert script.model_name_or_path == "some/model"
    for key in DEMO_DEFAULTS:
        if key not in {"output_dir", "use_cpu"}:
            assert getattr(config, key) == getattr(default, key), key
    assert config.output_dir == str(tmp_path / "out")


def test_a_model_named_in_a_config_file_is_a_user_run(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"model_name_or_path: some/model\ndataset_name: {tmp_path / 'd.jsonl'}\n")
    script, config = _parse(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert script.model_name_or_path == "some/model"
    assert config.max_steps != DEMO_DEFAULTS["max_steps"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset_name", "d.jsonl"], "error: --dataset_name d.jsonl needs --model_name_or_path"),
        (["--dataset_name=d.jsonl"], "error: --dataset_name d.jsonl needs --model_name_or_path"),
        (["--model_name_or_path", "m"], "error: --model_name_or_path m needs --dataset_name"),
        (
            ["--e3_min_per_prompt", "100"],
            "error: e3_min_per_prompt must be <= num_generations (8), got 100",
        ),
        (
            ["--temperature", "2.0"],
            "error: temperature must be <= e3_max_temperature (1.5), got 2.0",
        ),
        (["--e3_allocator", "greedy"], "error: e3_allocator must be one of"),
        (["--resume_from_checkpoint", "ck"], "error: --resume_from_checkpoint ck: the embedded"),
        (["--config", "no_such_recipe.yaml"], "error: --config: "),
    ],
)
def test_setup_errors_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = run([*argv, "--output_dir", str(tmp_path), "--demo_warm_start_steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err


def _error_line(err: str) -> str:
    """The last line of stderr (progress bars of datasets may come before it), checked unique."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    rows = [{"question": f"{a}+1=", "solution": a + 1} for a in range(8)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    return data


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = _data(tmp_path)
    capsys.readouterr()  # drop save_pretrained's progress bars
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt_column", "problem"], "error: --dataset_name: "),
        (["--answer_column", "nope"], "error: --dataset_name: "),
        (["--reward_funcs", "e3_no_such_module_xyz:f"], "error: --reward_funcs: spec="),
        (["--reward_funcs", "greedy"], "error: --reward_funcs: spec must be one of"),
    ],
)
def test_user_run_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Path, extra: list[str], message: str
) -> None:
    argv = [
        "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(data),
        "--prompt_column", "question", "--answer_column", "solution",
        "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", *extra,
    ]  # fmt: skip
    assert run(argv) == 2
    assert _error_line(capsys.readouterr().err).startswith(message)


def test_missing_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    base = ["--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    model = ["--model_name_or_path", str(tmp_path / "model")]
    assert run([*model, "--dataset_name", str(tmp_path / "none.jsonl"), *base]) == 2
    assert _error_line(capsys.readouterr().err).startswith("error: --dataset_name: ")
    columns = ["--prompt_column", "question", "--answer_column", "solution"]
    no_model = ["--model_name_or_path", str(tmp_path / "no_model")]
    assert run([*no_model, "--dataset_name", str(data), *columns, *base]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: --model_name_or_path: ") and "no such local folder" in line


def test_traceback_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--dataset_name", "x.jsonl", "--output_dir", str(tmp_path)]
    with pytest.raises(CliError, match="needs --model_name_or_path"):
        run([*argv, "--traceback"])
    monkeypatch.setenv("E3CORE_DEBUG", "1")
    with pytest.raises(CliError):
        run(argv)


def test_use_cpu_is_automatic_without_an_accelerator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_has_accelerator", lambda: False)
    _, config = _parse(_user(tmp_path))
    assert config.use_cpu
    assert "training on the CPU (use_cpu=True)" in capsys.readouterr().out
    # An explicit choice wins (with bf16 off: TRL refuses bf16 without a GPU or use_cpu).
    _, config = _parse(_user(tmp_path, "--use_cpu", "false", "--bf16", "false"))
    assert not config.use_cpu
    monkeypatch.setattr(cli, "_has_accelerator", lambda: True)
    _, config = _parse(_user(tmp_path, "--bf16", "false"))
    assert not config.use_cpu


def test_plot_is_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert cli._save_plot([{"e3/entropy": 0.3}], tmp_path / "p.png") is None
    assert "plot skipped: matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "p.png").exists()


def test_the_command_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "E3CORE_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "e3core.adapters.trl", "--dataset_name=data.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("error: --dataset_name data.jsonl needs")
    assert "Traceback" not in done.stderr


SLOW_REWARD = """
import time


def reward(completions, **kwargs):
    time.sleep(0.3)  # keeps each step long enough to kill the run between two checkpoints
    return [float(len(str(c)) % 2) for c in completions]
"""


def test_a_killed_user_run_resumes_with_every_history_row_once(tmp_path: Path, data: Path) -> None:
    (tmp_path / "e3_slow_reward.py").write_text(SLOW_REWARD)
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "e3core.adapters.trl",
        "--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(data),
        "--prompt_column", "question", "--answer_column", "solution",
        "--reward_funcs", "e3_slow_reward:reward", "--max_steps", "12",
        "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--max_completion_length", "3", "--save_strategy", "steps", "--save_steps", "3",
        "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
        "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    history = out / "e3_history.csv"

    def steps() -> list[int]:
        if not history.is_file():
            return []
        with history.open() as f:
            return [int(row["global_step"]) for row in csv.DictReader(f)]

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, **quiet)
    try:
        deadline = time.monotonic() + 240
        # Kill it once it has checkpointed at step 3 and logged generations past it.
        while not ((out / "checkpoint-3").is_dir() and max(steps(), default=-1) >= 4):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not reach step 4 in 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = steps()
    assert killed[:4] == [0, 1, 2, 3] and len(killed) < 12  # rows past the checkpoint exist
    latest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert (latest / "trainer_state.json").is_file()
    resumed = subprocess.run(
        [*argv, "--resume_from_checkpoint", str(latest)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert steps() == list(range(12))  # every generation step once, in order
