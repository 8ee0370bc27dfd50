"""Console tables and the learning-curve plot: format_table, trajectory_table, save_plot."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3core.adapters.trl.demo import summarize
from e3core.adapters.trl.reporting import format_table, save_plot, trajectory_table

KEYS = ("e3/sample_temperature", "e3/target_entropy", "e3/entropy", "e3/mixed_share")


def test_format_table():
    before = summarize(["1-digit", "2-digit"], [8, 8], [4, 0], ks=(1, 8))
    after = summarize(["1-digit", "2-digit"], [8, 8], [8, 2], ks=(1, 8))
    text = format_table(before)
    lines = text.splitlines()
    assert lines[0].split() == ["bucket", "prompts", "pass@1", "pass@8"]
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1-digit", "1", "0.500", "1.000"]
    both = format_table(before, after, labels=("pre", "post")).splitlines()
    assert both[0].split() == [
        "bucket",
        "prompts",
        *["pass@1", "pre", "pass@1", "post", "pass@8", "pre", "pass@8", "post"],
    ]
    assert both[-1].split() == ["all", "2", "0.250", "0.625", "0.500", "1.000"]
    with pytest.raises(ValueError, match=r"missing \['2-digit', 'all'\]"):
        format_table(before, after[:1])
    with pytest.raises(ValueError, match="rows must hold at least one row"):
        format_table([])


def test_save_plot_tolerates_missing_keys(tmp_path):
    history = [
        {"step": i, "entropy": 0.3 - 0.01 * i, "reward": 0.1 * i, "e3/temperature": 1.0 + 0.02 * i}
        for i in range(10)
    ]
    history[3]["e3/target_entropy"] = 0.25
    history[4]["entropy"] = float("nan")
    path = save_plot(history, tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = save_plot([], tmp_path / "empty.png")
    assert empty.stat().st_size > 0


def test_trajectory_table_text():
    history = [
        {
            "e3/sample_temperature": 1.0 + 0.05 * i,
            "e3/target_entropy": 0.4,
            "e3/entropy": 0.5 - 0.01 * i,
            "e3/mixed_share": i / 10,
        }
        for i in range(9)
    ]
    del history[0]["e3/entropy"]  # the first step has no entropy yet
    history[0]["e3/target_entropy"] = float("nan")
    history[4]["e3/mixed_share"] = 1  # not a float: shown as "-"
    history[8]["e3/sample_temperature"] = 12.3456
    assert trajectory_table(history) == (
        "  step  temperature  target H  entropy H  mixed\n"
        "     1        1.000         -          -  0.000\n"
        "     3        1.100     0.400      0.480  0.200\n"
        "     5        1.200     0.400      0.460      -\n"
        "     7        1.300     0.400      0.440  0.600\n"
        "     9       12.346     0.400      0.420  0.800"
    )
    assert trajectory_table([]) == "(no generation steps)"
    one = trajectory_table(history[:1]).splitlines()
    assert one[1].split() == ["1", "1.000", "-", "-", "0.000"] and len(one) == 2


@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                key: st.one_of(st.floats(0, 9.99), st.just(math.inf), st.integers(0, 3), st.none())
                for key in KEYS
            },
        ),
        max_size=40,
    )
)
def test_trajectory_table_rows_are_five_quantile_steps(history):
    lines = trajectory_table(history).splitlines()
    if not history:
        assert lines == ["(no generation steps)"]
        return
    n = len(history)
    steps = [int(line.split()[0]) for line in lines[1:]]
    assert steps == sorted({1, n // 4 + 1, n // 2 + 1, (3 * n) // 4 + 1, n})
    assert len({len(line) for line in lines}) == 1  # fixed width
    for step, line in zip(steps, lines[1:]):
        cells = line.split()[1:]
        for key, cell in zip(KEYS, cells):
            value = history[step - 1].get(key)
            shown = isinstance(value, float) and math.isfinite(value)
            assert cell == (f"{value:.3f}" if shown else "-")


def test_trajectory_table_errors():
    with pytest.raises(TypeError, match="history must be a sequence of mappings"):
        trajectory_table({"e3/entropy": 1.0})
    with pytest.raises(TypeError, match="one mapping per step, got list at index 1"):
        trajectory_table([{}, [1.0]])
