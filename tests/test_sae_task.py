"""SAEs over a run's checkpoints (`mi-jax sae`): the activations a checkpoint makes at a hook point, splicing a
dictionary back in, ground-truth recovery on the toy models, the command end to end, one line per bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.analysis import sae as sae_lib
from mi_jax.analysis import sae_task
from mi_jax.analysis.sae import SAEConfig
from mi_jax.analysis.sae_task import SAESettings
from mi_jax.interop.saelens import save_saelens
from mi_jax.io.results import load_results
from mi_jax.models import toy
from mi_jax.models import transformer as tfm
from mi_jax.tasks import make_task
from mi_jax.tasks.boolean_and import BooleanAndConfig
from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig
from tests.conftest import tiny_grokking
from tests.test_cli import assert_one_line_error, run_cli


def tms_cfg(**train) -> SuperpositionConfig:
    train = dataclasses.replace(SUPERPOSITION_TRAIN, **{"steps": 200, "eval_every": 100, "ckpt_every": 100,
                                                        "batch_size": 256, **train})
    return SuperpositionConfig(n_features=5, n_hidden=2, n_probabilities=3, importance_decay=0.9, eval_batch=64,
                               train=train)


def identity_dictionary(d: int, n_instances: int) -> dict:
    """A ReLU dictionary of 2d latents that reconstructs exactly: x = ReLU(x) - ReLU(-x); leaves [instance, ...]."""
    eye = jnp.eye(d)
    one = {"W_enc": jnp.concatenate([eye, -eye], 1), "b_enc": jnp.zeros(2 * d), "W_dec": jnp.concatenate([eye, -eye], 0),
           "b_dec": jnp.zeros(d), "threshold": jnp.zeros(())}
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n_instances, *x.shape)), one)


def test_capture_reads_the_activation_at_the_hook_point():
    task = make_task(tms_cfg())
    params = task.init_params(jax.random.key(0))
    x = task.batch(jax.random.key(1), 0)
    np.testing.assert_array_equal(sae_task.capture(task, params, x, "hidden"), jax.vmap(toy.hidden)(params, x))

    task = make_task(tiny_grokking())
    params = task.init_params(jax.random.key(0))
    batch = task.batch(jax.random.key(1), 0)
    hook = task.sae_hook_points()[0]
    assert hook == "blocks.0.hook_resid_post"  # the final residual stream is the default
    _, cache = tfm.apply(params, batch[0], task.cfg.transformer, cache=[hook])
    np.testing.assert_allclose(sae_task.capture(task, params, batch, hook), cache[hook], rtol=1e-6, atol=1e-6)
    assert "blocks.0.attn.hook_pattern" not in task.sae_hook_points()  # not one vector per token


@pytest.mark.parametrize("which", ["grokking", "tms"])
def test_an_identity_dictionary_spliced_in_recovers_the_whole_loss_and_an_empty_one_none(which):
    cfg = tiny_grokking() if which == "grokking" else tms_cfg()
    task = make_task(cfg)
    params = task.init_params(jax.random.key(0))
    batch = task.batch(jax.random.key(1), 0)
    hook = task.sae_hook_points()[0]
    d = sae_task.capture(task, params, batch, hook).shape[-1]
    n = cfg.n_instances if which == "tms" else 1
    relu = SAEConfig(architecture="relu", d_sae=2 * d)
    identity = identity_dictionary(d, n)
    scores = sae_task.splicing_scores(task, params, batch, hook, relu, identity)
    assert scores["recovered_zero"].shape == (n,)
    np.testing.assert_allclose(scores["recovered_zero"], 1.0, atol=1e-5)
    np.testing.assert_allclose(scores["recovered_mean"], 1.0, atol=1e-5)
    empty = {**identity, "W_dec": jnp.zeros_like(identity["W_dec"])}  # reconstructs 0: the zero ablation itself
    np.testing.assert_allclose(sae_task.splicing_scores(task, params, batch, hook, relu, empty)["recovered_zero"], 0.0,
                               atol=1e-6)


def test_at_a_position_the_identity_dictionary_recovers_the_loss_and_only_that_position_is_spliced():
    task = make_task(tiny_grokking())
    params = task.init_params(jax.random.key(0))
    batch = task.batch(jax.random.key(1), 0)
    hook = "blocks.0.hook_resid_post"
    d = sae_task.capture(task, params, batch, hook).shape[-1]
    relu, identity = SAEConfig(architecture="relu", d_sae=2 * d), identity_dictionary(d, 1)
    scores = sae_task.splicing_scores(task, params, batch, hook, relu, identity, position=-1)
    np.testing.assert_allclose(scores["recovered_zero"], 1.0, atol=1e-5)
    # the final residual stream at the first position never reaches the `=` token's logits: splicing there
    # changes no loss (nan: ablating costs nothing); the layer's input there does, through attention
    empty = {**identity, "W_dec": jnp.zeros_like(identity["W_dec"])}
    assert np.isnan(sae_task.splicing_scores(task, params, batch, hook, relu, empty, position=0)["recovered_zero"]).all()
    first = sae_task.splicing_scores(task, params, batch, "blocks.0.hook_resid_pre", relu, empty, position=0)
    np.testing.assert_allclose(first["recovered_zero"], 0.0, atol=1e-6)  # the empty dictionary is the zero ablation
    rows = sae_task.activation_rows(task, params, None, hook, 5, jax.random.key(2), 0, position=-1)
    assert rows.shape == (1, 5, d)


def test_grokking_latents_that_are_the_mlp_neurons_have_the_neurons_frequencies():
    cfg = tiny_grokking()
    task = make_task(cfg)
    params = task.init_params(jax.random.key(3))
    d_mlp = cfg.model.d_mlp
    neurons = identity_dictionary(d_mlp, 1)  # ReLU(x) = x for the MLP's post-ReLU activations: latent i is neuron i
    relu = SAEConfig(architecture="relu", d_sae=2 * d_mlp)
    fractions = sae_task.feature_frequencies(task, params, "blocks.0.mlp.hook_post", None, relu,
                                             neurons)["feature_frequency_fractions"]
    assert fractions.shape == (1, 2 * d_mlp, 6)  # [instance, d_sae, freq]: p = 13 has 6 frequencies
    from mi_jax.analysis import grokking as grokking_lib
    want = grokking_lib.family(cfg, ["neuron_best_frac", "neuron_best_freq"])(params, grokking_lib.make_data(cfg))
    np.testing.assert_allclose(fractions[0, :d_mlp].max(-1), want["neuron_best_frac"], rtol=1e-4, atol=1e-5)
    firing = np.asarray(want["neuron_best_frac"]) > 0
    np.testing.assert_array_equal(np.asarray(fractions[0, :d_mlp].argmax(-1) + 1)[firing],
                                  np.asarray(want["neuron_best_freq"])[firing])
    np.testing.assert_array_equal(fractions[0, d_mlp:], 0.0)  # ReLU(-x) never fires


def test_a_latent_of_the_answer_is_explained_by_it_and_a_latent_of_one_input_not_at_all(monkeypatch):
    from mi_jax.analysis import grokking as grokking_lib

    cfg = tiny_grokking()
    task = make_task(cfg)
    data = grokking_lib.make_data(cfg)
    a, b = data["pair_a"], data["pair_b"]
    answer_bump = ((a + b) % cfg.p == 3).astype(np.float32)  # fires on the pairs whose answer is 3
    input_wave = np.cos(2 * np.pi * 2 * a / cfg.p).astype(np.float32)  # a function of a alone
    planted = np.stack([answer_bump, input_wave], -1)[:, None].repeat(3, 1)  # [pair, pos, 2]
    monkeypatch.setattr(sae_task, "capture", lambda *_: jnp.asarray(planted))
    out = sae_task.feature_frequencies(task, None, "blocks.0.hook_resid_post", None,
                                       SAEConfig(architecture="relu", d_sae=4), identity_dictionary(2, 1))
    answer = np.asarray(out["feature_answer_fraction"][0])  # latents: ReLU(bump), ReLU(wave), ReLU(-bump), ReLU(-wave)
    np.testing.assert_allclose(answer[:2], [1.0, 0.0], atol=1e-5)
    assert answer[2] == 0.0  # never fires
    fractions = np.asarray(out["feature_frequency_fractions"][0])
    # ReLU(cos 2a): frequency 2 (84%) and its harmonic 4, nothing else
    assert fractions[1].argmax() + 1 == 2 and fractions[1, [1, 3]].sum() > 0.99


def test_frequency_summary_counts_latents_of_one_frequency_and_their_share_in_the_key_frequencies():
    from mi_jax.reports.sae import frequency_summary
    fractions = np.zeros((1, 1, 3, 4))  # [time, member, d_sae, freq]
    fractions[0, 0, 0] = [0.9, 0.05, 0, 0]  # one frequency (1), all but 5% in the key frequencies 1 and 2
    fractions[0, 0, 1] = [0.3, 0.3, 0.2, 0.2]  # spread: 0.6 in the key frequencies
    fractions[0, 0, 2] = [0, 0, 0, 1.0]  # one frequency, but it never fires
    out = frequency_summary({"feature_frequency_fractions": fractions, "firing": np.array([[[0.1, 0.2, 0.0]]]),
                             "feature_answer_fraction": np.array([[[0.2, 0.7, 0.9]]])}, [np.array([1, 2])])
    assert out["frequency_features"].tolist() == [[1]] and out["answer_features"].tolist() == [[1]]
    np.testing.assert_allclose(out["key_frequency_share"], [[np.median([0.95, 0.6])]])


def test_lineages_follow_permuted_features_and_drift_ignores_latents_that_never_fire():
    from mi_jax.reports.sae import feature_lineages
    rng = np.random.default_rng(0)
    first = rng.normal(size=(6, 4))
    order = rng.permutation(6)
    turned = first[order] + 0.3 * rng.normal(size=(6, 4))  # the same features, reordered and moved a little
    decoder = np.stack([first, first[order], turned])[:, None]  # [time, line, d_sae, d]
    firing = np.ones((3, 1, 6))
    firing[:, :, 5] = 0  # latent 5 (and wherever it moved) never fires
    lineages, drift = feature_lineages(decoder, firing)
    np.testing.assert_array_equal(lineages["index"][1, 0], np.argsort(order))  # feature i is now at argsort(order)[i]
    np.testing.assert_allclose(lineages["similarity"][0], 1.0)
    assert np.isnan(drift[0, 0]) and drift[1, 0] == pytest.approx(1.0)
    assert 0.5 < drift[2, 0] < 1.0


def test_sae_of_the_and_models_pre_activations_recovers_its_input_directions():
    # each input with at most two ones writes b_in + W_in[:, i] + W_in[:, j]: TopK k=2 finds the columns of W_in
    task = make_task(BooleanAndConfig(n_inputs=6, n_hidden=8))
    params = task.init_params(jax.random.key(0))
    settings = SAESettings(sae=SAEConfig(d_sae=12, k=2, steps=1500, batch_size=128, lr=3e-3), hook="hidden_pre")
    fn, data = sae_task.sae_measures(task, settings, "hidden_pre")
    out = jax.jit(fn)(params, data)
    assert out["sae/mmcs"].shape == () and float(out["sae/mmcs"]) > 0.9, out["sae/mmcs"]
    assert float(out["sae/fve"]) > 0.95 and float(out["sae/recovered_zero"]) > 0.9


@pytest.fixture(scope="module")
def tms_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sae") / "run"
    mj.train(tms_cfg(), run_dir, wandb="off", progress=False)
    return run_dir


SMALL = ["--set", "sae.d_sae=6", "--set", "sae.k=1", "--set", "sae.steps=150", "--set", "sae.batch_size=64",
         "--wandb", "off", "--quiet"]


def test_sae_command_writes_an_sae_per_checkpoint_instance_and_k_and_a_crosscoder(tms_run, capsys):
    code, out, _ = run_cli(capsys, "sae", str(tms_run), *SMALL, "--set", "ks=1,2", "--set", "crosscoder_checkpoints=3",
                           "--set", "crosscoder.d_sae=6", "--set", "crosscoder.k=1", "--set", "crosscoder.steps=100")
    assert code == 0, out
    steps, results = load_results(tms_run / "analysis" / "sae_hidden.npz")
    assert steps.tolist() == [0, 100, 200]
    for name in ("fve", "l0", "dead", "recovered_zero", "recovered_mean", "mmcs", "mmcs_weighted"):
        assert results[name].shape == (3, 1, 3, 2), name  # [time, member, instance, k]
    assert (results["l0"][..., 0] <= 1 + 1e-6).all() and (results["l0"][..., 1] <= 2 + 1e-6).all()
    assert ((results["mmcs"] > 0) & (results["mmcs"] <= 1 + 1e-6)).all()
    assert "k=2, instance 2, at step 200: FVE" in out
    cc_steps, cc = load_results(tms_run / "analysis" / "crosscoder_hidden.npz")
    assert cc_steps.tolist() == [0, 100, 200] and cc["decoder_norms"].shape == (3, 6)
    for png in ("sae_hidden.png", "crosscoder_hidden.png"):
        assert (tms_run / "analysis" / png).stat().st_size > 0


def test_sae_command_refuses_bad_input_in_one_line(tms_run, tmp_path, capsys):
    run = str(tms_run)
    assert_one_line_error(capsys, ["sae", run, "--hook", "hiden", *SMALL],
                          "unknown hook point 'hiden' for an SAE of this superposition model (did you mean 'hidden'?)")
    assert_one_line_error(capsys, ["sae", run, *SMALL, "--set", "sae.k=7"], "k=7 is larger than the dictionary (d_sae=6)")
    assert_one_line_error(capsys, ["sae", run, *SMALL, "--set", "sae.d_sae=0"], "dictionary size d_sae must be positive")
    assert_one_line_error(capsys, ["sae", run, *SMALL, "--set", "sae.architecture=relu", "--set", "sae.l1_coefficient=0"],
                          "needs a positive L1 coefficient")
    assert_one_line_error(capsys, ["sae", run, *SMALL, "--set", "ks=1,9"], "k=9 must be in 1..d_sae=6")
    assert_one_line_error(capsys, ["sae", str(tmp_path)], "is not a mi_jax run dir")
    assert_one_line_error(capsys, ["sae", run, *SMALL, "--set", "position=-1"],
                          "hook point hidden has no token positions (activations [3, 256, 2]): set no position")


SAE_PEER_PYTHON = Path("/tmp/peer-sae/bin/python")


@pytest.mark.skipif(not SAE_PEER_PYTHON.exists(), reason="needs the torch + SAELens peer venv at /tmp/peer-sae")
@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk"])
def test_an_exported_sae_loads_in_saelens_and_encodes_as_here(architecture, tmp_path):
    d_in, cfg = 6, SAEConfig(architecture=architecture, d_sae=16, k=3, steps=1)
    key = jax.random.key(0)
    sae = sae_lib.init_sae(cfg, d_in, key)
    # a trained-looking SAE: untied encoder, biases and (BatchTopK) a threshold of its own
    k1, k2, k3, k4 = jax.random.split(key, 4)
    sae = {**sae, "W_enc": jax.random.normal(k1, (d_in, 16)), "b_enc": 0.1 * jax.random.normal(k2, (16,)),
           "b_dec": 0.1 * jax.random.normal(k3, (d_in,)), "threshold": jnp.asarray(0.2)}
    folder = save_saelens(tmp_path / "sae", sae, architecture, hook_name="hidden", model_name="toy", k=3)
    x = np.asarray(jax.random.normal(k4, (32, d_in)), np.float32)
    ours = np.asarray(sae_lib.encode(cfg, sae, jnp.asarray(x)))
    script = """
import json, sys, numpy as np, torch
from sae_lens import SAE
folder, x = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
sae = SAE.load_from_disk(folder)
f = sae.encode(x)
print(json.dumps({"architecture": sae.cfg.architecture(), "f": f.tolist(), "x_hat": sae.decode(f).tolist()}))
"""
    run = subprocess.run([str(SAE_PEER_PYTHON), "-c", script, str(folder), json.dumps(x.tolist())],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    assert theirs["architecture"] == {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu"}[architecture]
    np.testing.assert_allclose(np.asarray(theirs["f"]), ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(theirs["x_hat"]), np.asarray(sae_lib.decode(sae, jnp.asarray(ours))),
                               rtol=1e-5, atol=1e-5)


def test_sae_command_exports_one_checkpoints_saes_in_saelens_format(tms_run, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "sae", str(tms_run), *SMALL, "--export", str(tmp_path / "out"), "--step", "100")
    assert code == 0, out
    folders = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in folders] == [f"step100_member0_instance{i}" for i in range(3)]
    config = json.loads((folders[0] / "cfg.json").read_text())
    assert config["architecture"] == "topk" and config["k"] == 1 and (config["d_in"], config["d_sae"]) == (2, 6)
    assert config["metadata"]["hook_name"] == "hidden" and config["metadata"]["step"] == 100
    assert_one_line_error(capsys, ["sae", str(tms_run), *SMALL, "--export", str(tmp_path / "x"), "--step", "120"],
                          "step 120 is not a checkpoint of this run; the nearest is 100")


def test_sae_command_on_a_transformer_ensemble_reads_each_members_own_activations(tmp_path, capsys):
    run = tmp_path / "run"
    mj.train(tiny_grokking(steps=100, ckpt_every=50, eval_every=50, seeds=(0, 1)), run, wandb="off", progress=False)
    code, out, _ = run_cli(capsys, "sae", str(run), "--hook", "blocks.0.mlp.hook_post", "--set", "sae.d_sae=16",
                           "--set", "sae.k=2", "--set", "sae.steps=60", "--set", "crosscoder_checkpoints=2",
                           "--set", "crosscoder.d_sae=16", "--set", "crosscoder.k=2", "--set", "crosscoder.steps=30",
                           "--set", "position=-1", "--wandb", "off", "--quiet")
    assert code == 0, out
    _, results = load_results(run / "analysis" / "sae_blocks.0.mlp.hook_post.npz")
    assert results["fve"].shape == (3, 2) and "mmcs" not in results  # [time, member]; no ground truth here
    assert not np.allclose(results["mse"][:, 0], results["mse"][:, 1])  # two seeds, two models' activations
    fractions = results["feature_frequency_fractions"]
    assert fractions.shape == (3, 2, 16, 6) and results["frequency_features"].shape == (3, 2)  # p = 13: 6 frequencies
    assert (fractions >= -1e-6).all() and (fractions.sum(-1) <= 1 + 1e-4).all()  # shares of each latent's variance
    assert np.isnan(results["lineage_cosine"][0]).all() and (results["lineage_cosine"][1:] <= 1 + 1e-6).all()
    _, lineages = load_results(run / "analysis" / "sae_blocks.0.mlp.hook_post_lineages.npz")
    assert lineages["index"].shape == (3, 2, 16) and lineages["similarity"].shape == (2, 2, 16)
    assert "latents of one frequency" in out and "at position -1" in out
    _, cc = load_results(run / "analysis" / "crosscoder_blocks.0.mlp.hook_post.npz")
    assert cc["decoder_norms"].shape == (2, 16)
    assert_one_line_error(capsys, ["sae", str(run), "--set", "position=3", "--wandb", "off", "--quiet"],
                          "position=3 is out of range: blocks.0.hook_resid_post has 3 positions")
