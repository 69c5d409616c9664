"""The intervention figures are written from small arrays: heatmaps, strips on one colour scale, probes."""

import numpy as np
import pytest
from PIL import Image

from mi_jax.plots import interventions as plots


def _figure_ok(path) -> bool:
    with Image.open(path) as image:
        return image.size[0] > 150 and image.size[1] > 100 and len(np.unique(np.asarray(image.convert("L")))) > 8


def test_layer_by_head_and_layer_by_position_heatmaps_are_written(tmp_path):
    heads = np.array([[0.9, -0.1, 0.05, 0.0], [0.4, 0.45, 0.16, 0.38]])
    positions = np.linspace(-0.2, 1.0, 3 * 12).reshape(3, 12)
    assert _figure_ok(plots.patching_heatmap(heads, tmp_path / "heads.png", title="layer x head"))
    assert _figure_ok(plots.patching_heatmap(positions, tmp_path / "pos.png", col_label="position",
                                             col_ticks=[f"t{i}" for i in range(12)]))


def test_strip_over_training_draws_chosen_checkpoints_on_one_scale(tmp_path):
    values = np.random.default_rng(0).normal(size=(9, 2, 4))
    values[3] = np.nan  # a checkpoint whose normalisation divided by 0 is drawn blank, not an error
    path = plots.patching_strip(values, np.arange(9) * 50, tmp_path / "strip.png", at=[0, 3, 8],
                                panel_notes=["a", "b", "c"])
    assert _figure_ok(path)
    assert plots.symmetric_limit(values[[0, 3, 8]]) == pytest.approx(np.nanmax(np.abs(values[[0, 8]])))
    assert plots.evenly_spaced(9, 6).tolist() == [0, 2, 3, 5, 6, 8]
    assert plots.evenly_spaced(3, 6).tolist() == [0, 1, 2]


def test_probe_and_ablation_curves_mark_the_phases(tmp_path):
    steps = np.arange(0, 1000, 50)
    r2 = {"cos(w a)": np.linspace(-0.6, 1, 20), "sin(w a)": np.linspace(0, 0.9, 20)}
    marks = {"memorised": 200, "cleanup": 600, "generalised": None}
    assert _figure_ok(plots.probe_over_training(steps, r2, tmp_path / "probe.png", metric="R²", marks=marks, chance=0.1))
    losses = {"full": np.geomspace(4, 1e-3, 20), "other steps": (steps[::2], np.geomspace(4, 1e-2, 10))}
    assert _figure_ok(plots.over_training(steps, losses, tmp_path / "loss.png", ylabel="test loss", logy=True))


def test_shapes_that_are_not_grids_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[row, col\]"):
        plots.patching_heatmap(np.zeros(4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 steps for 2 checkpoints"):
        plots.patching_strip(np.zeros((2, 2, 2)), [0, 1, 2], tmp_path / "x.png")


def test_runs_side_by_side_draws_one_panel_per_measure(tmp_path):
    steps = np.arange(0, 600, 25)
    panels = {"test loss": {"plain": (steps, np.geomspace(4, 1, 24)), "ablated": (steps, np.geomspace(4, 2, 24))},
              "induction": {"plain": (steps[::2], np.linspace(0, 0.8, 12))}}
    assert _figure_ok(plots.runs_side_by_side(panels, tmp_path / "runs.png", marks={"phase change": 300}, logy=("test loss",)))
