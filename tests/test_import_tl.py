"""A checkpoint series trained with TransformerLens comes into mi_jax unchanged, and goes back out.

The fixtures in tests/fixtures/ were made by real torch + TransformerLens
(tests/fixtures/make_tl_grokking_series.py): a tiny grokking model trained the Grokking demo's way,
and TransformerLens's own logits and losses for its checkpoints (tl_grokking.json).
"""

import collections
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mi_jax.config import ConfigError
from mi_jax.interop import torch_pickle
from mi_jax.interop.tl_import import grokking_config, write_run_dir
from mi_jax.interop.tl_series import read_series
from mi_jax.interop.transformer_lens import (
    export_series, export_trajectory, save_safetensors, to_tl_state_dict, transformer_config,
)
from mi_jax.models import transformer as tfm
from mi_jax.tasks.grokking import GrokkingData, GrokkingTask
from mi_jax.runs.trajectory import Trajectory

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEMO_FILE, STEPS_DIR = FIXTURES / "tl_grokking.pth", FIXTURES / "tl_grokking_steps"
TL = json.loads((FIXTURES / "tl_grokking.json").read_text())
PEER_PYTHON = Path("/tmp/peer-tl/bin/python")
FLOAT32_ULP = np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def demo():
    return read_series(DEMO_FILE)


def checkpoint(series, i):
    return jax.tree.map(lambda x: x[i], series.params)


def assert_same_series(a, b):
    np.testing.assert_array_equal(a.steps, b.steps)
    assert a.model == b.model
    assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert x.dtype == y.dtype and np.array_equal(x, y)  # bit for bit


# ----------------------------------------------------------------------------- the torch-free reader


def test_torch_free_reader_equals_torch_load_for_every_dtype_and_layout():
    ours = torch_pickle.load(FIXTURES / "tl_dtypes.pt")
    assert sorted(ours) == sorted(TL["odd_tensors"])
    for name, theirs in TL["odd_tensors"].items():
        assert ours[name].shape == tuple(theirs["shape"]), name
        assert str(ours[name].dtype) == theirs["dtype"].removeprefix("torch."), name
        values = np.asarray(theirs["values"], np.float64)
        np.testing.assert_array_equal(ours[name].astype(np.float64), values, err_msg=name)


def test_torch_free_reader_equals_torch_load_on_the_demo_file():
    first = torch_pickle.load(DEMO_FILE)["checkpoints"][0]
    assert sorted(first) == sorted(TL["first_checkpoint_tensors"])
    for name, theirs in TL["first_checkpoint_tensors"].items():
        assert str(first[name].dtype) == theirs["dtype"].removeprefix("torch."), name
        np.testing.assert_array_equal(first[name], np.asarray(theirs["values"]).astype(first[name].dtype), err_msg=name)


def test_the_demo_config_is_read_as_a_plain_record_of_its_fields(demo):
    config = torch_pickle.load(DEMO_FILE)["config"]
    assert isinstance(config, dict) and config["d_model"] == 16 and config["act_fn"] == "relu"
    assert "transformer_lens" not in sys.modules  # read, never imported
    assert demo.model == tfm.TransformerConfig(
        n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, act_fn="relu", n_ctx=3, d_vocab=8, d_vocab_out=7
    )


# ----------------------------------------------------------------------------- same numbers as TransformerLens


def test_imported_weights_give_transformer_lens_logits(demo):
    assert len(demo.steps) == len(TL["checkpoints"])
    tokens = np.asarray(TL["probe_inputs"])
    for i, row in enumerate(TL["checkpoints"]):
        ours, _ = tfm.apply(checkpoint(demo, i), tokens, demo.model)
        theirs = np.asarray(row["probe_logits"])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=8 * FLOAT32_ULP * np.abs(theirs).max())


def test_imported_run_scores_transformer_lens_losses_on_the_files_split(demo, tmp_path):
    cfg = grokking_config(demo)
    data = GrokkingData.from_config(cfg)
    p = cfg.p
    pairs = lambda idx: np.stack([idx // p, idx % p], 1)  # noqa: E731  pair index a * p + b -> (a, b)
    np.testing.assert_array_equal(data.tokens[data.train_idx, :2], pairs(np.sort(demo.train_indices)))
    np.testing.assert_array_equal(data.tokens[data.test_idx, :2], pairs(np.sort(demo.test_indices)))
    assert cfg.train_frac == len(demo.train_indices) / p**2

    run = Trajectory.load(write_run_dir(demo, cfg, tmp_path / "run"))
    assert run.config == cfg
    task = GrokkingTask(run.config)
    for i, row in enumerate(TL["checkpoints"]):
        assert run.steps[i] == row["epoch"] + 1  # the demo checkpoints after epoch e's optimiser step
        ours = task.evaluate(run.at(i))
        for split in ("train", "test"):
            np.testing.assert_allclose(float(ours[f"{split}_loss"]), row[f"{split}_loss"], rtol=4 * FLOAT32_ULP)


def test_the_loss_curves_come_over_aligned_with_the_checkpoints(demo):
    """The file's train loss at step s and test loss at step s are both losses of the params after s steps."""
    rows = {r["step"]: r for r in demo.metrics}
    assert len(demo.metrics) == 39 and min(rows) == 1  # 40 epochs: train losses at steps 0..39, test at 1..40
    for step, row in zip(demo.steps, TL["checkpoints"]):
        if step in rows:
            np.testing.assert_allclose(rows[step]["train_loss"], row["train_loss"], rtol=4 * FLOAT32_ULP)
            np.testing.assert_allclose(rows[step]["test_loss"], row["test_loss"], rtol=4 * FLOAT32_ULP)


def test_a_directory_of_per_step_state_dicts_is_the_same_series(demo):
    names = sorted(p.name for p in STEPS_DIR.iterdir())
    assert names == ["20.pth", "40.pth", "step_10.pt", "step_30.pt"]
    assert_same_series(read_series(STEPS_DIR, tl_config={"act_fn": "relu"}), demo)


# ----------------------------------------------------------------------------- export


def test_export_then_import_is_the_identity(demo, tmp_path):
    paths = export_series(demo.steps, demo.params, demo.model, tmp_path / "tl")
    assert [p.name for p in paths] == [f"{s}.safetensors" for s in demo.steps]
    assert_same_series(read_series(tmp_path / "tl"), demo)  # the config travels in the metadata


def test_transformer_lens_to_a_mi_jax_run_and_back_is_the_identity(demo, tmp_path):
    run = Trajectory.load(write_run_dir(demo, grokking_config(demo), tmp_path / "run"))
    export_trajectory(run, tmp_path / "tl")
    assert_same_series(read_series(tmp_path / "tl"), demo)


def perturbed_params(model, seed):
    """Fresh params plus noise: nonzero biases and layer-norm weights away from 1, so every leaf counts."""
    params = tfm.init_params(model, jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
    return jax.tree.map(lambda x: np.asarray(x + 0.1 * jax.random.normal(next(keys), x.shape)), params)


@pytest.mark.parametrize(
    "model",
    [
        tfm.TransformerConfig(n_layers=2, d_model=12, n_heads=3, d_mlp=20, act_fn="gelu", layer_norm=True),
        tfm.TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=None, init_std=0.05),
        tfm.TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=None, layer_norm=True,
                              positional_embedding="shortformer"),
    ],
    ids=["layer_norm_gelu", "attn_only", "shortformer"],
)
def test_export_then_import_is_the_identity_for_other_architectures(model, tmp_path):
    model = dataclasses.replace(model, n_ctx=5, d_vocab=9, d_vocab_out=6)
    params = perturbed_params(model, 3)
    save_safetensors(params, model, tmp_path / "step_7.safetensors", step=7)
    back = read_series(tmp_path / "step_7.safetensors")
    assert back.model == model and list(back.steps) == [7]
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(checkpoint(back, 0))):
        assert np.array_equal(x, y)


def test_npz_files_with_transformer_lens_names_are_read(demo, tmp_path):
    for i, step in enumerate(demo.steps):
        np.savez(tmp_path / f"ckpt_{step}.npz", **to_tl_state_dict(checkpoint(demo, i), demo.model))
    assert_same_series(read_series(tmp_path, tl_config={"act_fn": "relu"}), demo)


# compared at XLA's default optimisation level: the default suite compiles at level 0, whose gelu
# rounds a few float32 ulps further from torch's
@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="needs the torch + TransformerLens peer venv at /tmp/peer-tl")
def test_transformer_lens_loads_the_export_strictly_and_gives_mi_jax_logits(demo, tmp_path):
    shared = {"n_ctx": 5, "d_vocab": 9, "d_vocab_out": 6}
    exports = [(checkpoint(demo, 3), demo.model, np.asarray(TL["probe_inputs"]))]
    for i, model in enumerate([
        tfm.TransformerConfig(n_layers=2, d_model=12, n_heads=3, d_mlp=20, act_fn="gelu", layer_norm=True, **shared),
        tfm.TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=None, **shared),
        tfm.TransformerConfig(
            n_layers=1, d_model=8, n_heads=2, d_mlp=16, act_fn="silu", positional_embedding="none", **shared
        ),
        tfm.TransformerConfig(n_layers=2, d_model=12, n_heads=3, d_mlp=20, layer_norm=True,
                              positional_embedding="shortformer", **shared),
    ]):
        tokens = np.asarray(jax.random.randint(jax.random.key(i), (3, 5), 0, 9))
        exports.append((perturbed_params(model, 10 * i), model, tokens))
    jobs = []
    for i, (params, model, tokens) in enumerate(exports):
        path = save_safetensors(params, model, tmp_path / f"{i}.safetensors", step=i)
        jobs.append([str(path), tokens.tolist()])
    script = (
        "import json, sys, torch; from safetensors import safe_open; from safetensors.torch import load_file\n"
        "from transformer_lens import HookedTransformer, HookedTransformerConfig\n"
        "out = []\n"
        "for path, tokens in json.loads(sys.argv[1]):\n"
        "    meta = safe_open(path, 'pt').metadata()\n"
        "    model = HookedTransformer(HookedTransformerConfig(**json.loads(meta['tl_config']), device='cpu'))\n"
        "    model.load_state_dict(load_file(path), strict=True)\n"
        "    out.append(model(torch.tensor(tokens)).tolist())\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run(
        [str(PEER_PYTHON), "-c", script, json.dumps(jobs)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for (params, model, tokens), theirs in zip(exports, json.loads(run.stdout.strip().splitlines()[-1]), strict=True):
        ours, _ = tfm.apply(params, tokens, model)
        theirs = np.asarray(theirs)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=8 * FLOAT32_ULP * np.abs(theirs).max())


# compared at XLA's default optimisation level: the default suite compiles at level 0, whose gelu
# rounds a few float32 ulps further from torch's
@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="needs the torch + TransformerLens peer venv at /tmp/peer-tl")
def test_transformer_lens_loads_an_exported_language_model_strictly_and_gives_mi_jax_logits(tmp_path, monkeypatch):
    """A language run (a BPE model on the tiny corpus) trained a few steps, exported with `mi-jax export`:
    TransformerLens loads each checkpoint strictly and gives mi_jax's logits on real validation windows."""
    import mi_jax as mj
    from mi_jax import cli
    from mi_jax.tasks import make_task
    from mi_jax.tasks.language import DataConfig, LanguageConfig

    monkeypatch.setenv("MI_JAX_CACHE", str(tmp_path / "cache"))
    cfg = LanguageConfig(
        data=DataConfig(source=str(FIXTURES / "tiny_corpus"), tokenizer="bpe", vocab_size=300, val_fraction=0.25),
        seq_len=16, n_eval=8,
        model=tfm.TransformerConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=None, layer_norm=True),
        train=mj.TrainConfig(steps=6, lr=3e-3, weight_decay=0.0, batch_size=8, eval_every=3, ckpt_every=3, seed=0),
    )
    mj.train(cfg, tmp_path / "run", wandb="off", progress=False)
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "tl")]) == 0
    traj = Trajectory.load(tmp_path / "run")
    tokens = np.asarray(make_task(traj.config).eval_tokens)[:4, :-1]  # real validation windows, [4, seq_len]
    paths = [tmp_path / "tl" / f"{step}.safetensors" for step in traj.steps]
    assert len(paths) == 3 and all(p.exists() for p in paths)
    script = (
        "import json, sys, torch; from safetensors import safe_open; from safetensors.torch import load_file\n"
        "from transformer_lens import HookedTransformer, HookedTransformerConfig\n"
        "paths, tokens = json.loads(sys.argv[1])\n"
        "out = []\n"
        "for path in paths:\n"
        "    meta = safe_open(path, 'pt').metadata()\n"
        "    model = HookedTransformer(HookedTransformerConfig(**json.loads(meta['tl_config']), device='cpu'))\n"
        "    model.load_state_dict(load_file(path), strict=True)\n"
        "    out.append(model(torch.tensor(tokens)).tolist())\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([str(PEER_PYTHON), "-c", script, json.dumps([[str(p) for p in paths], tokens.tolist()])],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    outputs = json.loads(run.stdout.strip().splitlines()[-1])
    for i, theirs in enumerate(outputs):
        ours, _ = tfm.apply(traj.at(i), tokens, traj.config.transformer)
        theirs = np.asarray(theirs)
        assert theirs.shape == (4, cfg.seq_len, 300)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=8 * FLOAT32_ULP * np.abs(theirs).max())
    assert not np.allclose(outputs[0], outputs[-1])  # the checkpoints differ: training moved the weights


# ----------------------------------------------------------------------------- bad input: one line each


def torch_zip(path: Path, pickled: bytes) -> Path:
    """A file laid out like torch.save's zip archive around a hand-made pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
    return path


def test_plain_containers_and_numpy_scalars_are_read(tmp_path):
    """What a training script may save beside its state dicts, pickled as torch.save does (protocol 2)."""
    saved = {"tags": {"a", "b"}, "frozen": frozenset({1}), "empty": b"", "raw": b"\x00\xff", "pair": (1, None),
             "ordered": collections.OrderedDict(x=[1.5, "s"]), "lr": np.float64(1e-3), "n": np.int64(7)}
    back = torch_pickle.load(torch_zip(tmp_path / "extras.pt", pickle.dumps(saved, protocol=2)))
    assert back == saved and type(back["ordered"]) is collections.OrderedDict


class RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_would_run_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    attacks = {
        "os.system": pickle.dumps({"embed.W_E": RunsShell(f"touch {marker}")}, protocol=2),
        "eval, by hand": b"cbuiltins\neval\n(S'open(" + repr(str(marker)).encode() + b", \"w\")'\ntR.",
        "a TL class": b"\x80\x02ctransformer_lens.HookedTransformer\nHookedTransformer\n)R.",
    }
    for name, payload in attacks.items():
        path = torch_zip(tmp_path / f"{name}.pth", payload)
        refused = r"^refusing to load \S+ from .*: only tensors and plain containers are read$"
        with pytest.raises(ConfigError, match=refused) as e:
            read_series(path)
        assert "\n" not in str(e.value), name
        assert not marker.exists(), name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: torch_zip(d / "x.pth", pickle.dumps({"lr": 1e-3, "epochs": [1, 2]}, protocol=2)),
         r"x.pth is not a TransformerLens state dict or checkpoint series \(a dict with keys lr, epochs\)$"),
        (lambda d: (d / "notes.pt").write_text("hello") and d / "notes.pt", r"notes.pt is not a torch.save file"),
        (lambda d: FIXTURES / "tl_legacy.pt", r"tl_legacy.pt is a legacy \(pre-zip\) torch.save file"),
        (lambda d: d, r"holds no per-step checkpoint files"),
        (lambda d: (shutil.copy(STEPS_DIR / "20.pth", d / "final.pth"), d)[1], r"cannot tell the step of .*final.pth"),
        (lambda d: (d / "3.safetensors").write_bytes(b"\x08junk") and d / "3.safetensors",
         r"cannot read .*3.safetensors as safetensors"),
    ],
    ids=["not_a_series", "not_torch", "legacy_torch", "empty_dir", "no_step_in_name", "corrupt_safetensors"],
)
def test_a_file_that_is_not_a_series_gives_one_line(make, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as e:
        read_series(make(tmp_path), tl_config={"act_fn": "relu"})
    assert "\n" not in str(e.value)


def test_a_state_dict_missing_a_weight_gives_one_line(demo, tmp_path):
    path = save_safetensors(checkpoint(demo, 0), demo.model, tmp_path / "5.safetensors")
    tensors = load_file(path)
    del tensors["blocks.0.mlp.W_in"]
    save_file(tensors, str(path))
    missing = r"5.safetensors lacks weight blocks.0.mlp.W_in \(shape \(16, 32\) for this config\)$"
    with pytest.raises(ConfigError, match=missing):
        read_series(path, tl_config={"act_fn": "relu"})


def test_shapes_inconsistent_with_the_config_give_one_line():
    wrong = r"epoch 9\): blocks.0.mlp.W_in has shape \(16, 32\), the config gives \(16, 64\)$"
    with pytest.raises(ConfigError, match=wrong):
        read_series(DEMO_FILE, tl_config={"d_mlp": 64})


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"positional_embedding_type": "rotary", "normalization_type": "RMS"},
         "positional_embedding_type='rotary', normalization_type='RMS'"),
        ({"parallel_attn_mlp": True}, "parallel_attn_mlp=True"),
        ({"n_key_value_heads": 1}, "n_key_value_heads=1 (grouped-query attention)"),
        ({"attn_scale": 1.0}, "attn_scale=1.0 (mi_jax divides by sqrt(d_head)"),
        ({"act_fn": "gelu"}, "act_fn='gelu' (exact erf gelu"),
        ({"normalization_type": "LNPre"}, "normalization_type='LNPre'"),
        ({"positional_embedding_type": "alibi"}, "positional_embedding_type='alibi'"),
    ],
)
def test_a_transformer_lens_feature_mi_jax_lacks_is_named_in_one_line(fields, named):
    tl = {"n_layers": 1, "d_model": 16, "n_ctx": 3, "d_head": 8, "n_heads": 2, "d_mlp": 32, "act_fn": "relu",
          "d_vocab": 8, "normalization_type": None, **fields}
    with pytest.raises(ConfigError, match="^TransformerLens features mi_jax's transformer lacks: ") as e:
        transformer_config(tl)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_explicit_train_indices_are_checked():
    cfg = grokking_config(read_series(DEMO_FILE))
    for bad, message in (((0, 49), r"pair indices a \* p \+ b in \[0, 49\)"), ((3, 3), "duplicates")):
        with pytest.raises(ConfigError, match=message):
            type(cfg)(p=7, train_indices=bad, model=cfg.model)


# ----------------------------------------------------------------------------- the command line


def test_mi_jax_import_then_analyze_gives_transformer_lens_losses(tmp_path, capsys):
    import mi_jax as mj
    from mi_jax import cli

    out = tmp_path / "run"
    assert cli.main(["import", str(DEMO_FILE), "--out", str(out)]) == 0
    assert "imported 4 checkpoints" in capsys.readouterr().out
    assert cli.main(["analyze", str(out), "--wandb", "off"]) == 0
    assert "seed 0: key frequencies" in capsys.readouterr().out
    with np.load(out / "analysis" / "grokking.npz") as f:
        for i, row in enumerate(TL["checkpoints"]):  # float64 here (the imported run keeps mi_jax's default)
            np.testing.assert_allclose(f["train_loss"][i, 0], row["train_loss"], rtol=1e-5)
            np.testing.assert_allclose(f["test_loss"][i, 0], row["test_loss"], rtol=1e-5)
    exported = tmp_path / "tl"
    assert cli.main(["export", str(out), "--out", str(exported)]) == 0
    assert_same_series(read_series(exported), read_series(DEMO_FILE))
    assert mj.Trajectory.load(out).members == ({"seed": 0},)


@pytest.mark.parametrize("bad, message", [("not_torch", "is not a torch.save file"), ("runs_code", "refusing to load")],
                         ids=["not a state dict series", "a pickle that runs code"])
def test_mi_jax_import_refuses_bad_files_with_one_line(tmp_path, capsys, bad, message):
    from mi_jax import cli

    marker, src = tmp_path / "ran", tmp_path / "in" / "series.pth"
    src.parent.mkdir()
    if bad == "not_torch":
        src.write_bytes(b"not a torch file")
    else:
        src.write_bytes(_zip_pickle(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()))
    code = cli.main(["import", str(src), "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists() and not marker.exists()


def _zip_pickle(payload: bytes) -> bytes:
    """A torch.save-shaped zip whose data.pkl is `payload`."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return buffer.getvalue()
