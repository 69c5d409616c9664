"""The command line: presets, overrides, and one clear error line (exit 2) for every bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mi_jax as mj
from mi_jax import cli, presets, runtime


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


BUILT_IN = ["and_superposition", "grokking_p113", "grokking_p31", "grokking_small", "induction_1l", "induction_2l",
            "language_attn_1l", "language_attn_1l_full", "language_attn_2l", "language_attn_2l_bump", "language_attn_2l_full",
            "language_attn_2l_induction", "language_gelu_1l", "language_gelu_1l_full", "language_gelu_2l",
            "language_gelu_2l_full", "tms_20_5",
            "tms_5_2", "tms_dimensionality", "tms_dynamics", "tms_phase_diagram"]


def test_list_shows_every_built_in_preset_with_its_summary_and_source(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    names = [line.split()[0] for line in lines[::2]]
    assert names == BUILT_IN
    for name, summary, source in zip(names, lines[::2], lines[1::2]):
        doc = presets._module(name, "built-in").__doc__.strip().splitlines()[0]
        assert summary.split(None, 1)[1] == doc and source.strip() == "(built-in)"


def test_user_presets_from_a_folder_flag_or_the_environment_come_first(capsys, tmp_path, monkeypatch):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for folder, p in ((mine, 17), (theirs, 19)):
        folder.mkdir()
        (folder / "grokking_small.py").write_text(
            f'"""grokking_small with p = {p}."""\nimport dataclasses\nimport mi_jax as mj\n'
            f'PRESET = dataclasses.replace(mj.load_preset("grokking_p113"), p={p})\n')
    (mine / "my_run.py").write_text('"""My own run."""\nimport mi_jax as mj\nPRESET = mj.load_preset("tms_5_2")\n')
    monkeypatch.setenv("MI_JAX_PRESETS", str(theirs))
    monkeypatch.setattr(presets, "USER_DIRS", [])  # `--presets` fills it; a fresh list, restored after
    code, out, _ = run_cli(capsys, "--presets", str(mine), "list")
    assert code == 0
    listing = dict(zip([line.split()[0] for line in out.splitlines()[::2]], out.splitlines()[1::2]))
    assert listing["my_run"].strip() == f"({mine / 'my_run.py'})"
    assert listing["grokking_small"].strip() == f"({theirs / 'grokking_small.py'})"  # $MI_JAX_PRESETS comes first
    assert listing["grokking_p113"].strip() == "(built-in)"
    assert mj.load_preset("grokking_small").p == 19 and mj.load_preset("my_run").n_features == 5


def test_the_p113_preset_is_the_paper_setup():
    cfg = mj.load_preset("grokking_p113")
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
    (["train", "grokking_small", "--set", "train.chunk_steps=0"], "train.chunk_steps must be >= 1"),
    (["train", "grokking_small", "--seeds", "1,x"], "--seeds"),
    (["train", "grokking_small", "--set", "noequals"], "key=value"),
    (["train", "grokking_small", "--set", "train.devices=64"], "train.devices=64 but only 2 devices exist"),
    (["sweep", "grokking_small", "--grid", "train.lr=1e-3,2e-3", "--set", "train.devices=64"], "train.devices=64"),
    (["train", "grokking_small", "--coordinator", "localhost:1234"], "--coordinator, --num-processes and --process-id go"),
    (["sweep", "grokking_small", "--grid", "train.lr=1e-3", "--coordinator", "localhost:1234", "--num-processes", "2",
      "--process-id", "2"], "--process-id must be in 0..1"),
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


def test_compile_cache_goes_under_the_user_cache_per_cpu_and_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.delenv("MI_JAX_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = Path(runtime.compile_cache_dir())
    assert folder.parent == tmp_path / "mi_jax" / "xla" and folder.name == runtime.cpu_tag()
    monkeypatch.setenv("MI_JAX_COMPILE_CACHE", str(tmp_path / "mine"))
    assert runtime.compile_cache_dir() == str(tmp_path / "mine")
    monkeypatch.setenv("MI_JAX_COMPILE_CACHE", "off")
    assert runtime.compile_cache_dir() is None


PYTHON_USER = """
import sys, jax
import mi_jax as mj
cfg = mj.GrokkingConfig(p=11, train_frac=0.5, model=mj.TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=16),
                        train=mj.TrainConfig(steps=20, eval_every=10, ckpt_every=10))
mj.train(cfg, sys.argv[1], wandb="off", progress=False)
print(jax.config.jax_compilation_cache_dir, jax.device_count())
"""


@pytest.mark.slow  # a fresh process that compiles a run: ~12 s
def test_a_python_user_gets_the_cli_s_compile_cache_and_cpu_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "MI_JAX_", "XLA_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", PYTHON_USER, str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cache_dir, n_devices = done.stdout.split()
    assert Path(cache_dir).parent == tmp_path / "cache" / "mi_jax" / "xla"
    assert any(Path(cache_dir).iterdir()), "nothing was compiled into the cache"
    assert int(n_devices) == min(os.cpu_count(), runtime.MAX_CPU_DEVICES)
