"""Linear probes: planted features recovered, fitted per checkpoint inside a measure, and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_induction import hand_built_induction_model

from mi_jax.analysis.core import analyze_params
from mi_jax.config import ConfigError
from mi_jax.interventions import grokking_probe_measure, induction_probe_measure, linear_probe_measure, logistic_accuracy, ridge_r2
from mi_jax.interventions.probes import split
from mi_jax.models.transformer import TransformerConfig, init_params
from mi_jax.tasks.grokking import GrokkingConfig


def test_ridge_probe_recovers_a_planted_linear_feature():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    planted = X @ rng.normal(size=8) + 3.0 + 0.01 * rng.normal(size=400)
    unrelated = rng.normal(size=400)
    Y = jnp.asarray(np.stack([planted, unrelated], 1), jnp.float32)
    fit, test = split(400)
    r2 = jax.jit(ridge_r2)(X[fit], Y[fit], X[test], Y[test])
    assert float(r2[0]) > 0.999
    assert float(r2[1]) < 0.1


def test_logistic_probe_recovers_planted_classes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    labels = (X @ rng.normal(size=(6, 4))).argmax(-1)
    fit, test = split(600)
    accuracy = jax.jit(logistic_accuracy, static_argnums=4)
    assert float(accuracy(X[fit], labels[fit], X[test], labels[test], 4)) > 0.9
    assert float(accuracy(X[fit], rng.permutation(labels)[fit], X[test], labels[test], 4)) < 0.5


def test_induction_probe_reads_the_previous_token_from_the_previous_token_head():
    params, cfg = hand_built_induction_model()
    tokens = np.asarray(jax.random.randint(jax.random.key(0), (24, cfg.n_ctx), 0, cfg.d_vocab))
    measure = induction_probe_measure(cfg, tokens, steps=30)
    silenced = jax.tree.map(lambda x: x, params)
    silenced["blocks"][0]["attn"]["W_O"] = jnp.zeros_like(params["blocks"][0]["attn"]["W_O"])  # no previous-token head
    series = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, silenced)
    accuracy = analyze_params(series, {"probe": measure}, member_axis=False)["probe_prev_token_accuracy"]  # [time 2]: fitted per checkpoint
    assert accuracy[0] > 0.99  # the head writes the previous token, one-hot
    assert accuracy[1] < 0.2  # without it the layer's output is its bias: chance (1/16)


def test_grokking_probe_finds_a_planted_key_frequency():
    mcfg = GrokkingConfig(p=11, train_frac=0.5, model=TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8))
    cfg = mcfg.transformer
    params = init_params(cfg, jax.random.key(0))
    a = np.arange(11)
    planted = params["W_E"].at[:11, :2].set(jnp.asarray(np.stack([np.cos(2 * np.pi * 3 * a / 11), np.sin(2 * np.pi * 3 * a / 11)], 1)))
    params = {**params, "W_E": planted.at[:11, 2:].set(0.0)}  # the embedding holds only frequency 3's wave
    measure = grokking_probe_measure(mcfg, [3, 4], hook="hook_embed", position=0)  # the embedding of a
    one = jax.jit(measure)(params)
    assert one["probe_a_r2"].shape == (2, 2)
    np.testing.assert_allclose(one["probe_a_r2"][0], 1.0, atol=1e-4)  # cos, sin of frequency 3
    assert float(one["probe_a_r2"][1].max()) < 0.5  # frequency 4 is not linear in frequency 3's wave
    assert float(one["probe_b_r2"].max()) < 0.2  # position 0 holds a, not b
    default = jax.eval_shape(grokking_probe_measure(mcfg, [3, 4]), params)  # the residual stream at `=` after the last layer
    assert {k: v.shape for k, v in default.items()} == {"probe_a_r2": (2, 2), "probe_b_r2": (2, 2), "probe_sum_r2": (2, 2)}


def test_bad_probe_input_fails_with_one_clear_line():
    cfg = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=None, n_ctx=5, d_vocab=7)
    tokens = np.zeros((6, 5), np.int32)
    with pytest.raises(ConfigError) as err:
        linear_probe_measure(cfg, tokens, {"x": np.zeros(5)}, hook="blocks.0.hook_resid_post", positions=-1)
    assert str(err.value) == "probe target 'x' has 5 entries but the data has 6 samples"
    with pytest.raises(ConfigError, match=r"unknown hook point 'blocks.0.hook_resid' for this model \(did you mean 'blocks.0.hook_resid_p"):
        linear_probe_measure(cfg, tokens, {"x": np.zeros(6)}, hook="blocks.0.hook_resid")
    with pytest.raises(ConfigError, match="key frequencies must be in 1..5"):
        grokking_probe_measure(dataclasses.replace(GrokkingConfig(p=11), model=TransformerConfig(n_layers=1, d_model=8, n_heads=2)), [6])
