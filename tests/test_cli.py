"""The command line: presets, overrides, and one clear error line (exit 2) for every bad input."""

import os
from pathlib import Path

import pytest

from mi_jax import cli, presets
from mi_jax.train.trajectory import Trajectory


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, argv, match):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mi-jax: error: ") and match in lines[0], lines[0]


def test_list_shows_the_presets(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "grokking_p113" in out and "grokking_small" in out


def test_the_p113_preset_is_the_paper_setup():
    cfg = presets.load("grokking_p113")
    m, t = cfg.transformer, cfg.train
    assert (cfg.p, cfg.op, cfg.train_frac, cfg.data_seed, t.seed) == (113, "+", 0.3, 598, 999)
    assert (m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.act_fn, m.layer_norm) == (1, 128, 4, 32, 512, "relu", False)
    assert (m.d_vocab, m.d_vocab_out, m.n_ctx) == (114, 113, 3)
    assert (t.lr, t.weight_decay, t.beta1, t.beta2, t.steps, t.ckpt_every, t.batch_size) == (1e-3, 1.0, 0.9, 0.98, 25_000, 100, None)
    assert t.freeze_biases and t.logsoftmax_f64 and t.warmup_steps == 10


BAD_INPUTS = [
    (["train", "no_such_preset"], "unknown preset"),
    (["train", "grokking_small", "--set", "train.no_such_key=1"], "unknown config key"),
    (["train", "grokking_small", "--set", "nonsense=1"], "unknown config key"),
    (["train", "grokking_small", "--set", "train.steps=lots"], "expected an integer"),
    (["train", "grokking_small", "--set", "model.d_model=100", "--set", "model.n_heads=3"], "not divisible"),
    (["train", "grokking_small", "--set", "train_frac=0"], "train_frac must be in (0, 1]"),
    (["train", "grokking_small", "--set", "train_frac=1.5"], "train_frac must be in (0, 1]"),
    (["train", "grokking_small", "--set", "p=1"], "p must be >= 2"),
    (["train", "grokking_small", "--set", "p=51", "--set", "op=/"], "not prime"),
    (["train", "grokking_small", "--set", "model.n_ctx=2"], "n_ctx=2 is too small"),
    (["train", "grokking_small", "--set", "train.ckpt_every=30"], "multiple of"),
    (["train", "grokking_small", "--seeds", "1,x"], "--seeds"),
    (["train", "grokking_small", "--set", "noequals"], "key=value"),
]


@pytest.mark.parametrize("argv, match", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gets_one_clear_line_before_any_compute(capsys, tmp_path, argv, match):
    out = tmp_path / "run"
    assert_one_line_error(capsys, argv + ["--out", str(out), "--wandb", "off"], match)
    assert not out.exists(), "nothing may be written for a bad input"


def test_existing_run_dir_needs_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert_one_line_error(capsys, ["train", "grokking_small", "--out", str(out), "--wandb", "off"], "--overwrite")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_one_line_error(capsys, ["train", "grokking_small", "--out", str(locked / "run"), "--wandb", "off"], "not writable")


def test_output_under_a_file_is_not_writable(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(capsys, ["train", "grokking_small", "--out", str(blocker / "run"), "--wandb", "off"], "not writable")


def test_resume_of_a_non_run_dir(capsys, tmp_path):
    assert_one_line_error(capsys, ["train", "--resume", str(tmp_path), "--wandb", "off"], "not a mi_jax run dir")


def test_analyze_of_a_dir_without_checkpoints(capsys, tmp_path):
    assert_one_line_error(capsys, ["analyze", str(tmp_path), "--wandb", "off"], "not a mi_jax run dir")


def test_train_with_overrides_and_seeds(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        capsys, "train", "grokking_small", "--set", "p=11", "--set", "model.d_model=32", "--set", "model.d_mlp=32",
        "--set", "train.steps=100", "--seeds", "0,1", "--out", str(out), "--wandb", "off", "--quiet",
    )
    assert code == 0, err
    assert f"run dir: {out}" in stdout
    traj = Trajectory.load(out)
    assert traj.config.p == 11 and traj.seeds == (0, 1)
    assert traj.params["W_E"].shape == (3, 2, 12, 32)
    # (`mi-jax analyze` on a finished run is covered by tests/test_grokking_analysis.py)


def test_compile_cache_goes_under_the_user_cache_per_cpu_and_can_be_turned_off(monkeypatch, tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    monkeypatch.setattr(os, "environ", environ)  # use_compile_cache writes the environment: a private copy
    cli.use_compile_cache()
    folder = Path(environ["JAX_COMPILATION_CACHE_DIR"])
    assert folder.parent == tmp_path / "mi_jax" / "xla" and folder.name == cli._cpu_tag()
    assert float(environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) > 0
    environ.clear()
    environ.update(MI_JAX_COMPILE_CACHE=str(tmp_path / "mine"))
    cli.use_compile_cache()
    assert environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine")
    environ.clear()
    environ.update(MI_JAX_COMPILE_CACHE="off")
    cli.use_compile_cache()
    assert "JAX_COMPILATION_CACHE_DIR" not in environ
