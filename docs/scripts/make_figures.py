r"""Draw the docs' temperature-control figure: ``python docs/scripts/make_figures.py`` (~2 s).

The controllers are e3core's own; the "policy" is a simulated plant, not a model. Its entropy at
temperature :math:`T` is :math:`H_t(T) = h_t T^{\gamma}` with :math:`\gamma = 1.5` and a base
entropy :math:`h_t` that collapses from 0.6 toward 0.4 nats (the decline E3 exists to stop) and
drops by another 10 % at step 150 (a sudden change, e.g. of the data), measured with 3 %
multiplicative noise. Same noise draws for every controller.
Writes ``docs/img/temperature_sim.png``. (The docs' allocation figure,
``docs/img/allocation_sim.png``, is a copy of ``benchmarks/allocation_sim.png``, drawn by
``benchmarks/allocation_sim.py``; its ``--replot`` redraws it from the CSV of a run.)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from e3core import (
    CosineAnnealedTarget,
    E3TemperatureController,
    PITemperatureController,
    WarmupMeanTarget,
)

STEPS = 300
GAMMA = 1.5
VOCAB = 151_936  # Qwen2's vocabulary, as in the E3 paper's models
OUT = Path(__file__).resolve().parents[1] / "img" / "temperature_sim.png"


def base_entropy(step: np.ndarray) -> np.ndarray:
    """Entropy at T = 1 of the simulated policy: collapses from 0.6 nats, drops 10 % at 150."""
    return (0.4 + 0.2 * np.exp(-step / 60.0)) * np.where(step >= 150, 0.9, 1.0)


def run(controller: E3TemperatureController | PITemperatureController | None, noise: np.ndarray):
    """Temperatures, measured entropies and targets over ``STEPS`` steps."""
    temps, ents, targets = [], [], []
    temperature = 1.0
    for step in range(STEPS):
        entropy = float(base_entropy(np.array(step)) * temperature**GAMMA * noise[step])
        temps.append(temperature)
        ents.append(entropy)
        if controller is not None:
            temperature = controller.update(entropy)
            targets.append(controller.target_entropy)
    return np.array(temps), np.array(ents), targets


def main() -> None:
    """Run the four configurations and save the figure."""
    noise = np.exp(np.random.default_rng(0).normal(0.0, 0.03, STEPS))
    anneal = CosineAnnealedTarget.paper(WarmupMeanTarget(), STEPS, final_ratio=0.9)
    runs = {
        "fixed T = 1 (no control)": run(None, noise),
        "E3 rule (bounded 0.5..1.5)": run(E3TemperatureController(VOCAB), noise),
        "E3 rule + cosine annealing (paper)": run(
            E3TemperatureController(VOCAB, target=anneal), noise
        ),
        "PI, kp = ki = 0.1": run(PITemperatureController(), noise),
    }
    steps = np.arange(1, STEPS + 1)
    fig, (ax_t, ax_h) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    styles = {"linewidth": 1.2}
    for (label, (temps, ents, _)), dash in zip(runs.items(), ["-", "-", "-", ":"], strict=True):
        ax_t.plot(steps, temps, dash, label=label, **styles)
        ax_h.plot(steps, ents, dash, label=label, **styles)
    ax_h.plot(
        steps[1:], runs["E3 rule + cosine annealing (paper)"][2][1:], "k--", label="annealed target"
    )
    ax_t.set(xlabel="step", ylabel="sampling temperature", title="temperature")
    ax_h.set(xlabel="step", ylabel="token entropy (nats)", title="entropy (simulated plant)")
    # One legend for both panels, below them, so that it hides no data.
    fig.legend(*ax_h.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9.5)
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
