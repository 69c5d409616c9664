"""`mi-jax analyze` of every experiment kind, end to end on tiny two-member runs: results for every
member in one layout ([time, member, ...]), a summary line per member, and the figures."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import mi_jax as mj
from mi_jax import cli
from mi_jax.tasks.boolean_and import BOOLEAN_AND_TRAIN
from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN

SEEDS = (0, 1)


def tiny_induction():
    return mj.InductionConfig(
        seq_len=16, d_vocab=16, repeat_len=6, min_repeat_len=3, n_eval=16,
        model=mj.TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, layer_norm=True),
        train=mj.TrainConfig(steps=100, lr=3e-3, weight_decay=0.0, batch_size=16, eval_every=25, ckpt_every=25,
                             seeds=SEEDS))


def tiny_superposition(**kw):
    train = dataclasses.replace(SUPERPOSITION_TRAIN, steps=200, eval_every=50, ckpt_every=50, batch_size=128, seeds=SEEDS)
    return mj.SuperpositionConfig(n_features=5, n_hidden=2, n_probabilities=3, eval_batch=64, train=train, **kw)


def tiny_boolean_and():
    train = dataclasses.replace(BOOLEAN_AND_TRAIN, steps=200, eval_every=50, ckpt_every=50, seeds=SEEDS)
    return mj.BooleanAndConfig(n_inputs=6, n_hidden=8, train=train)


def _figure_ok(path) -> bool:
    with Image.open(path) as image:
        return image.size[0] > 200 and image.size[1] > 100 and len(np.unique(np.asarray(image.convert("L")))) > 8


def _analyze(cfg, tmp_path):
    run_dir = tmp_path / "run"
    mj.train(cfg, run_dir, wandb="off", progress=False)
    return run_dir, mj.analyze_run(run_dir, wandb="off")


@pytest.mark.slow  # ~20 s, mostly figures; the induction measures are checked in test_induction
def test_induction_report_covers_every_member(tmp_path):
    run_dir, lines = _analyze(tiny_induction(), tmp_path)
    out = run_dir / "analysis"
    with np.load(out / "induction.npz") as f:
        assert f["induction"].shape == (5, 2, 2, 2)  # [time, member, layer, head]
        assert f["icl_score"].shape == (5, 2) and f["ov_copying"].shape == (5, 2, 2, 2)
        assert np.isfinite(f["k_composition"]).all()
    summary = json.loads((out / "induction_summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == list(SEEDS)
    for member in summary["members"]:
        assert member["induction_head"].startswith("L1") and member["previous_token_head"].startswith("L0")
        assert 0 <= member["induction_score"]["final"] <= 1
    assert [line.split(":")[0] for line in lines if "induction" in line and "->" in line] == ["seed 0", "seed 1"]
    for name in ("loss", *(f"{kind}_seed{s}" for s in SEEDS
                          for kind in ("head_scores", "attention", "k_composition", "position_loss"))):
        assert _figure_ok(out / f"induction_{name}.png"), name


@pytest.mark.parametrize("rel_importance", [pytest.param(1, marks=pytest.mark.slow), 2], ids=["sparsity", "phase_diagram"])
def test_superposition_report_covers_every_member(tmp_path, rel_importance):
    run_dir, lines = _analyze(tiny_superposition(n_rel_importance=rel_importance), tmp_path)
    out = run_dir / "analysis"
    n_instances = 3 * rel_importance
    with np.load(out / "superposition.npz") as f:
        assert f["dimensionality"].shape == (5, 2, n_instances, 5)  # [time, member, instance, feat]
        assert f["loss"].shape == (5, 2, n_instances) and (f["loss"][-1] < f["loss"][0]).all()
        D = f["dimensionality"][-1]
        assert ((D >= 0) & (D <= 1 + 1e-5)).all()
    per_member = [line for line in lines if line.startswith("seed ") and ("D_i" in line or "dedicated" in line)]
    assert len(per_member) == 4  # a geometry line and a jumps line for each member
    figures = ["geometry_2d", "gram", "dimensionality_dynamics",
               "dimensionality" if rel_importance == 1 else "phase_diagram"]
    for name in figures:
        for seed in SEEDS:
            assert _figure_ok(out / f"{name}_seed{seed}.png"), (name, seed)


def test_boolean_and_report_covers_every_member(tmp_path):
    run_dir, lines = _analyze(tiny_boolean_and(), tmp_path)
    out = run_dir / "analysis"
    with np.load(out / "boolean_and.npz") as f:
        assert set(f.files) == {"steps", "acc", "tpr", "fpr", "max_err"}
        assert f["acc"].shape == (5, 2) and (f["max_err"][-1] < f["max_err"][0]).all()
    finals = [line for line in lines if line.startswith("seed ") and "final acc" in line]
    assert len(finals) == 2
    assert _figure_ok(out / "and_accuracy.png") and _figure_ok(out / "training_curves.png")


@pytest.mark.slow  # the CLI trains in the wheel check of .ci/run and in test_run_dir; ensembles in test_training
def test_cli_trains_an_ensemble_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "grokking_small", "--set", "p=11", "--set", "model.d_model=32", "--set",
                     "model.d_mlp=32", "--set", "train.steps=100", "--seeds", "0,1", "--out", str(out),
                     "--wandb", "off", "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"run dir: {out}" in stdout and "final (step 100): " in stdout
    assert "train_loss" in stdout and "(mean of 2," in stdout
    traj = mj.Trajectory.load(out)
    assert traj.config.p == 11 and traj.members == ({"seed": 0}, {"seed": 1})
    assert traj.params["W_E"].shape == (3, 2, 12, 32) and traj.metrics["test_loss"].shape == (3, 2)
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["step"] == 100 and len(final["test_loss"]) == 2
    # (`mi-jax analyze` of an ensemble: tests/test_grokking_analysis.py and tests/test_sweep.py)
