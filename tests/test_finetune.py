"""Fine-tuning as a trajectory: a run started from another run's snapshot, its lineage and step offset, its
resume, its bad inputs, and the measures of its change from the base (component change, patching)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

import mi_jax as mj
from conftest import tiny_grokking
from mi_jax.analysis import finetune as ft
from mi_jax.config import ConfigError
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.reports import finetune as report
from mi_jax.runs import run as run_lib
from mi_jax.runs.trajectory import base_params
from mi_jax.tasks import config_dict, make_task
from mi_jax.training import loop
from mi_jax.trees import flatten, unflatten
from test_cli import assert_one_line_error, run_cli
from test_reproducibility import assert_same

BASE_STEP = 20
# grokking_small's config with tiny_grokking's shapes and a short run, for the command line
TINY_SETS = ["--set", "p=13", "--set", "train_frac=0.5", "--set", "data_seed=1", "--set", "model.d_model=32",
             "--set", "model.n_heads=2", "--set", "model.d_head=16", "--set", "model.d_mlp=64", "--set", "train.steps=10",
             "--set", "train.ckpt_every=10", "--set", "train.eval_every=10"]


def base_config(**train):
    return tiny_grokking(**{"steps": 40, "ckpt_every": 10, "eval_every": 10, **train})


def finetune_config(**train):
    """Another seed (another data order) and learning rate from the base's, 30 steps."""
    return tiny_grokking(**{"steps": 30, "ckpt_every": 10, "eval_every": 10, "lr": 1e-3, "seed": 3, **train})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base run dir, fine-tuned run dir): the fine-tune starts from the base's step 20."""
    root = tmp_path_factory.mktemp("finetune")
    mj.train(base_config(), root / "base", wandb="off", progress=False)
    mj.train(finetune_config(), root / "ft", wandb="off", progress=False, init_from=f"{root / 'base'}:{BASE_STEP}")
    return root / "base", root / "ft"


def same_params(a: dict, b: dict) -> bool:
    theirs = flatten(b)
    return all(np.array_equal(np.asarray(x), np.asarray(theirs[name])) for name, x in flatten(a).items())


# ----------------------------------------------------------------------------- training


def test_a_finetune_starts_from_the_base_snapshot_and_continues_its_steps(runs):
    base_dir, ft_dir = runs
    base, tuned = mj.Trajectory.load(base_dir), mj.Trajectory.load(ft_dir)
    assert same_params(tuned.at(0), base.at(list(base.steps).index(BASE_STEP)))
    assert not same_params(tuned.at(-1), tuned.at(0)), "the fine-tune trained"
    # the lineage, in config.json beside the config, which still loads (and trains from scratch) as before
    recorded = run_dir_lib.read_config(ft_dir)["init_from"]
    assert recorded == {"run": str(base_dir.resolve()), "step": BASE_STEP, "member": [0]}
    assert tuned.init_from == recorded and mj.Trajectory.load(base_dir).init_from is None
    assert tuned.config == finetune_config()
    # the series reads as the base's steps continued; the files count the fine-tune's own (what resume reads)
    assert list(tuned.steps) == [20, 30, 40, 50] and list(tuned.metrics["step"]) == [20, 30, 40, 50]
    assert [row["step"] for row in run_dir_lib.read_metrics(ft_dir)] == [0, 10, 20, 30]
    # the first evaluation is the base's params evaluated on the fine-tune's task
    assert np.isclose(tuned.metrics["test_loss"][0, 0], base.metrics["test_loss"][2, 0], rtol=1e-6)


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_a_killed_finetune_resumes_bit_identically(runs, tmp_path):
    base_dir, ft_dir = runs
    cfg = finetune_config(chunk_steps=13)  # chunks of 13 steps: stopped after one, at the fine-tune's step 13
    task, run_dir = make_task(cfg), tmp_path / "cut"
    params, origin = run_lib.start_from(f"{base_dir}:{BASE_STEP}", task, 1, run_dir)
    run_dir.mkdir()
    run_dir_lib.write_config(run_dir, {**config_dict(cfg), "init_from": origin})
    loop.train_task(task, run_dir, progress=False, stop_after_chunks=1, init_params=params)
    assert mj.Trajectory.load(run_dir).steps[-1] < BASE_STEP + cfg.train.steps, "the run was not stopped"
    final = mj.resume(run_dir, wandb="off", progress=False)
    assert final["step"] == BASE_STEP + cfg.train.steps
    assert_same(mj.Trajectory.load(run_dir, on_corrupt="raise"), mj.Trajectory.load(ft_dir), "resumed fine-tune")


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_members_start_from_one_base_member_or_each_from_their_own(runs, capsys, tmp_path):
    base_dir, _ = runs
    task = make_task(finetune_config())
    params, origin = run_lib.start_from(base_dir, task, 3)  # no step: the base's last snapshot
    base = mj.Trajectory.load(base_dir)
    assert origin["step"] == 40 and origin["member"] == [0, 0, 0]
    assert all(same_params(jax.tree.map(lambda x: x[m], params), base.at(-1)) for m in range(3))
    # an ensemble base: member i starts member i, trained as one vmapped program
    mj.train(base_config(steps=10, seeds=(0, 1)), tmp_path / "ens", wandb="off", progress=False)
    final = mj.train(finetune_config(steps=10, seeds=(4, 5)), tmp_path / "ens_ft", wandb="off", progress=False,
                     init_from=tmp_path / "ens")
    ens, tuned = mj.Trajectory.load(tmp_path / "ens"), mj.Trajectory.load(tmp_path / "ens_ft")
    assert tuned.init_from["member"] == [0, 1] and final["step"] == 20 and list(tuned.steps) == [10, 20]
    for m in range(2):
        assert same_params(tuned.at(0, m), ens.at(-1, m))
    assert not same_params(tuned.at(0, 0), tuned.at(0, 1))
    with pytest.raises(ConfigError, match="2 members cannot start 3"):
        run_lib.start_from(tmp_path / "ens", task, 3)
    # chosen base members: swapped, or one of them for a one-member run (from the command line)
    swapped, origin = run_lib.start_from(tmp_path / "ens", make_task(finetune_config(seeds=(4, 5))), 2, init_members=[1, 0])
    assert origin["member"] == [1, 0]
    assert all(same_params(jax.tree.map(lambda x: x[m], swapped), ens.at(-1, 1 - m)) for m in range(2))
    code, _, err = run_cli(capsys, "train", "grokking_small", *TINY_SETS, "--init-from", str(tmp_path / "ens"),
                           "--init-members", "1", "--out", str(tmp_path / "one"), "--wandb", "off", "--quiet")
    assert code == 0, err
    one = mj.Trajectory.load(tmp_path / "one")
    assert one.init_from["member"] == [1] and same_params(one.at(0, 0), ens.at(-1, 1))


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_the_command_line_finetunes_from_the_last_snapshot_by_default(runs, capsys, tmp_path):
    base_dir, _ = runs
    out = tmp_path / "cli_ft"
    code, printed, err = run_cli(capsys, "train", "grokking_small", *TINY_SETS, "--init-from", str(base_dir),
                                 "--out", str(out), "--wandb", "off", "--quiet")
    assert code == 0, err
    assert "final (step 50)" in printed and f"fine-tuned from {base_dir}" in printed
    assert run_dir_lib.read_config(out)["init_from"]["step"] == 40
    assert list(mj.Trajectory.load(out).steps) == [40, 50]


BAD = {  # id: (train's arguments, the base's suffix, the error)
    "shapes": (["grokking_small"], "", "its params do not fit this config's: W_E is [14, 32] there, [54, 128] here"),
    "kind": (["induction_1l"], "", "that run is of kind grokking, this one of kind induction"),
    "step": (["grokking_small", *TINY_SETS], ":7", "no snapshot at step 7 (its snapshots: 0, 10, 20, 30, 40)"),
}


@pytest.mark.parametrize("argv, suffix, match", BAD.values(), ids=BAD.keys())
def test_a_bad_base_is_one_line_before_anything_is_written(runs, capsys, tmp_path, argv, suffix, match):
    base_dir, _ = runs
    out = tmp_path / "run"
    assert_one_line_error(capsys, ["train", *argv, "--init-from", f"{base_dir}{suffix}", "--out", str(out), "--wandb", "off"],
                          match)
    assert not out.exists(), "nothing may be written for a bad base"


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_other_bad_inits_are_one_line(runs, capsys, tmp_path):
    base_dir, ft_dir = runs
    out = tmp_path / "run"
    assert_one_line_error(capsys, ["train", "grokking_small", "--init-from", str(tmp_path / "nowhere"), "--out", str(out)],
                          "not a mi_jax run dir")
    assert_one_line_error(capsys, ["train", "--resume", str(ft_dir), "--init-from", str(base_dir)], "drop --set/--seeds/--init-from")
    assert_one_line_error(capsys, ["train", "grokking_small", *TINY_SETS, "--init-from", str(base_dir), "--out",
                                   str(base_dir), "--overwrite"], "cannot be fine-tuned from itself")
    assert not out.exists() and run_dir_lib.read_config(base_dir).get("init_from") is None


def test_chosen_init_members_must_exist_and_fit(runs, capsys, tmp_path):
    base_dir, _ = runs
    task = make_task(finetune_config())
    params, origin = run_lib.start_from(base_dir, task, 3, init_members=[0])
    assert origin["member"] == [0, 0, 0] and jax.tree.leaves(params)[0].shape[0] == 3
    with pytest.raises(ConfigError, match="--init-members: 2 members cannot start 3: give one, or one per member"):
        run_lib.start_from(base_dir, task, 3, init_members=[0, 0])
    with pytest.raises(ConfigError, match="--init-members: the base has members 0-0, not 1"):
        run_lib.start_from(base_dir, task, 1, init_members=[1])
    out = tmp_path / "run"
    assert_one_line_error(capsys, ["train", "grokking_small", *TINY_SETS, "--init-members", "0", "--out", str(out)],
                          "--init-members needs --init-from")
    assert_one_line_error(capsys, ["train", "grokking_small", *TINY_SETS, "--init-from", str(base_dir),
                                   "--init-members", "one", "--out", str(out)], "--init-members expects comma-separated integers")
    assert not out.exists()


# ----------------------------------------------------------------------------- measures


def test_component_change_is_zero_at_the_start_and_the_relative_frobenius_norm_after(runs):
    _, ft_dir = runs
    traj = mj.Trajectory.load(ft_dir)
    base = base_params(traj.init_from)
    results = mj.analyze(traj, {"change": ft.component_change}, {}, per_member={"base": base})
    assert results["change_W_QK"].shape == (4, 1, 1, 2) and results["change_W_in"].shape == (4, 1, 1)
    assert set(results) == {f"change_{n}" for n in ("W_QK", "W_OV", "W_E", "W_pos", "W_U", "W_in", "W_out")}
    for name, values in results.items():
        assert np.all(values[0] == 0), name
        assert np.all(values[-1] > 0), name
    last, first = traj.at(-1), jax.tree.map(lambda x: x[0], base)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    attn, attn_b = last["blocks"][0]["attn"], first["blocks"][0]["attn"]
    qk, qk_b = attn["W_Q"][1] @ attn["W_K"][1].T, attn_b["W_Q"][1] @ attn_b["W_K"][1].T
    ov, ov_b = attn["W_V"][0] @ attn["W_O"][0], attn_b["W_V"][0] @ attn_b["W_O"][0]
    np.testing.assert_allclose(results["change_W_QK"][-1, 0, 0, 1], rel(qk, qk_b), rtol=1e-4)
    np.testing.assert_allclose(results["change_W_OV"][-1, 0, 0, 0], rel(ov, ov_b), rtol=1e-4)
    np.testing.assert_allclose(results["change_W_E"][-1, 0], rel(last["W_E"], first["W_E"]), rtol=1e-5)
    np.testing.assert_allclose(results["change_W_out"][-1, 0, 0],
                               rel(last["blocks"][0]["mlp"]["W_out"], first["blocks"][0]["mlp"]["W_out"]), rtol=1e-5)


def perturbed(params: dict, keep=lambda name: False, only=None, scale: float = 0.5, seed: int = 0) -> dict:
    """`params` with Gaussian noise (`scale` x each leaf's RMS) on the leaves named in `only` (default: all
    but those `keep` holds)."""
    flat, out = flatten(params), {}
    for i, (name, x) in enumerate(flat.items()):
        x = np.asarray(x)
        touch = name in only if only is not None else not keep(name)
        noise = np.asarray(jax.random.normal(jax.random.key(seed * 1000 + i), x.shape)) * (np.sqrt(np.mean(x ** 2)) + 0.1)
        out[name] = x + scale * noise if touch else x
    return unflatten(out)


def patching(task, tuned: dict, base: dict, batch_size=None) -> dict:
    data = ft.eval_set(task)
    return jax.jit(ft.patching_measure(task.cfg.transformer, data.tokens, data.loss, batch_size))(tuned, {"base": base})


UNEMBED = ("W_U", "b_U", "ln_final.w", "ln_final.b")


def test_patching_every_component_gives_back_the_base_loss():
    task = make_task(tiny_grokking())
    base = task.init_params(jax.random.key(0))
    out = patching(task, perturbed(base, keep=lambda n: n in UNEMBED), base)
    assert abs(out["loss_finetuned"] - out["loss_base"]) > 1e-3, "the perturbation changed the loss"
    np.testing.assert_allclose(out["loss_all_patched"], out["loss_base"], rtol=1e-5)
    np.testing.assert_allclose(out["patch_all"], 1.0, atol=1e-3)
    assert out["patch_head"].shape == (1, 2) and out["patch_attn"].shape == (1,) and out["patch_mlp"].shape == (1,)


def test_patching_finds_the_one_component_that_changed():
    task = make_task(tiny_grokking())
    base = task.init_params(jax.random.key(0))
    mlp = patching(task, perturbed(base, only={"blocks.0.mlp.W_in"}), base)
    np.testing.assert_allclose(mlp["patch_mlp"], [1.0], atol=1e-4)
    np.testing.assert_allclose(mlp["patch_all"], 1.0, atol=1e-4)
    for site in ("patch_head", "patch_attn", "patch_embed"):
        np.testing.assert_allclose(mlp[site], 0.0, atol=1e-4, err_msg=site)
    one_at_a_time = patching(task, perturbed(base, only={"blocks.0.mlp.W_in"}), base, batch_size=1)  # lax.map, not vmap
    for site, values in mlp.items():
        np.testing.assert_allclose(one_at_a_time[site], values, rtol=1e-5, atol=1e-6, err_msg=site)
    # head 1's values changed (its W_V, that head's slice only): its output alone carries the change into the MLP
    flat = flatten(base)
    w_v = np.asarray(flat["blocks.0.attn.W_V"]).copy()
    w_v[1] += 0.5 * np.asarray(jax.random.normal(jax.random.key(7), w_v[1].shape)) * np.abs(w_v).mean()
    head = patching(task, unflatten({**flat, "blocks.0.attn.W_V": w_v}), base)
    np.testing.assert_allclose(head["patch_head"][0], [0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(head["patch_attn"], [1.0], atol=1e-4)


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_patching_a_language_model_with_layer_norm_gives_back_the_base_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("MI_JAX_CACHE", str(tmp_path / "cache"))
    from test_language import tiny_language

    task = make_task(tiny_language())
    base = task.init_params(jax.random.key(0))
    out = patching(task, perturbed(base, keep=lambda n: n in UNEMBED), base)
    assert out["patch_head"].shape == (2, 2) and "patch_mlp" not in out  # attention-only, 2 layers
    np.testing.assert_allclose(out["loss_all_patched"], out["loss_base"], rtol=1e-5)
    np.testing.assert_allclose(out["patch_all"], 1.0, atol=1e-3)


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_analyze_runs_the_finetune_report_after_the_kinds_own(runs):
    _, ft_dir = runs
    lines = mj.analyze_run(ft_dir, wandb="off")
    assert any(line.startswith("fine-tuned from") for line in lines), lines
    assert lines.index(next(l for l in lines if "grokking.npz" in l)) < lines.index(next(l for l in lines if "finetune.npz" in l))
    analysis = ft_dir / run_dir_lib.ANALYSIS
    for name in ("finetune.npz", "finetune_summary.json", "finetune_change.png", "finetune_patching.png"):
        assert (analysis / name).exists(), name
    with np.load(analysis / "finetune.npz") as f:
        assert list(f["steps"]) == [20, 30, 40, 50]
        assert np.all(f["change_W_QK"][0] == 0) and np.all(f["change_W_QK"][1:] > 0)
        assert np.isnan(f["patch_all"][0, 0]), "nothing to undo at the first checkpoint"
        assert np.all(np.isfinite(f["patch_head"][1:])) and f["patch_head"].shape == (4, 1, 1, 2)
        assert np.all(f["loss_base"] == f["loss_base"][0]) and np.isclose(f["loss_finetuned"][0], f["loss_base"][0], rtol=1e-6)
    summary = json.loads((analysis / "finetune_summary.json").read_text())
    assert summary["init_from"]["step"] == BASE_STEP and summary["members"][0]["base_member"] == 0
    assert set(summary["members"][0]["final_patching"]) >= {"L0H0", "L0H1", "L0 attn", "L0 mlp", "embed", "all"}


@pytest.mark.slow  # more runs; the default suite keeps the fine-tune's start, its one-line errors and the measures
def test_a_finetune_whose_base_is_gone_gets_a_warning_not_a_report(runs, tmp_path):
    traj = mj.Trajectory.load(runs[1])
    lines = report.report(dataclasses.replace(traj, init_from={**traj.init_from, "run": str(tmp_path / "gone")}), tmp_path)
    assert len(lines) == 1 and lines[0].startswith("warning: no fine-tune report: the base run") and "gone" in lines[0]
