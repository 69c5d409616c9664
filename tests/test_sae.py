"""Sparse autoencoders as a measure over the trajectory (mi_jax.analysis.sae)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.analysis.sae import SAEConfig, encode, init_sae, mmcs, train_sae
from mi_jax.config import ConfigError

N_FEATURES, D_IN, ACTIVE = 32, 16, 3  # 32 planted unit directions in 16 dims, ~3 active per example


def planted_features(seed: int = 1) -> jax.Array:
    F = jax.random.normal(jax.random.key(seed), (N_FEATURES, D_IN))
    return F / jnp.linalg.norm(F, axis=1, keepdims=True)


def sparse_codes(key: jax.Array, batch: int) -> jax.Array:
    """[batch, N_FEATURES]: each feature on with probability ACTIVE / N_FEATURES, magnitude in [0.5, 1.5]."""
    k_on, k_mag = jax.random.split(key)
    on = jax.random.bernoulli(k_on, ACTIVE / N_FEATURES, (batch, N_FEATURES))
    return on * jax.random.uniform(k_mag, (batch, N_FEATURES), minval=0.5, maxval=1.5)


def activations_of(features: jax.Array, batch: int):
    """activations_fn(key, step) of a "checkpoint" whose features are `features` [n, d_in]."""
    return lambda key, step: sparse_codes(key, batch) @ features


@pytest.mark.parametrize("architecture, settings, steps", [
    ("topk", {"k": ACTIVE}, 1000),
    ("relu", {"l1_coefficient": 0.6}, 1500),
])
def test_sae_recovers_planted_features(architecture, settings, steps):
    F = planted_features()
    cfg = SAEConfig(architecture=architecture, d_sae=48, steps=steps, batch_size=256, lr=3e-3, **settings)
    sae, metrics = jax.jit(lambda key: train_sae(cfg, activations_of(F, cfg.batch_size), key))(jax.random.key(0))
    assert float(mmcs(sae["W_dec"], F)) >= 0.95
    assert float(metrics["fve"]) > 0.7
    if architecture == "topk":
        assert float(metrics["l0"]) == ACTIVE
        np.testing.assert_allclose(np.linalg.norm(np.asarray(sae["W_dec"]), axis=1), 1.0, rtol=1e-5)


def test_vmapped_saes_equal_per_checkpoint_training():
    """Three "checkpoints" (feature sets) x their keys: one vmapped program == one training per checkpoint."""
    cfg = SAEConfig(architecture="topk", d_sae=32, k=ACTIVE, steps=150, batch_size=64, lr=3e-3, dead_after=20)
    stack = jnp.stack([planted_features(s) for s in (1, 2, 3)])  # [checkpoint, n, d_in]
    keys = jax.random.split(jax.random.key(7), 3)
    one = jax.jit(lambda F, key: train_sae(cfg, activations_of(F, cfg.batch_size), key))
    saes, metrics = jax.vmap(one)(stack, keys)
    for c in range(3):
        sae_c, metrics_c = one(stack[c], keys[c])
        for name in sae_c:
            np.testing.assert_allclose(saes[name][c], sae_c[name], rtol=1e-4, atol=1e-5, err_msg=name)
        for name in metrics_c:
            np.testing.assert_allclose(metrics[name][c], metrics_c[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow  # a vmapped grid of trainings; the vmapped-equals-per-checkpoint test stays in the default suite
def test_vmapped_grid_of_sparsities():
    """A traced k (ranked selection) trains the same SAE as the static k (lax.top_k), and a grid of L1
    coefficients vmaps; stronger L1 gives a sparser code."""
    F = planted_features()
    acts = activations_of(F, 64)
    key = jax.random.key(3)
    cfg = SAEConfig(architecture="topk", d_sae=32, k=ACTIVE, steps=100, batch_size=64, lr=3e-3)
    static, _ = jax.jit(lambda kk: train_sae(cfg, acts, kk))(key)
    traced, _ = jax.jit(lambda kk, k: train_sae(cfg, acts, kk, k=k))(key, jnp.asarray(ACTIVE))
    for name in static:
        np.testing.assert_allclose(traced[name], static[name], rtol=1e-4, atol=1e-5, err_msg=name)
    relu = SAEConfig(architecture="relu", d_sae=32, steps=100, batch_size=64, lr=3e-3)
    grid = jnp.asarray([0.01, 1.0])
    _, metrics = jax.jit(jax.vmap(lambda l1: train_sae(relu, acts, key, l1_coefficient=l1)))(grid)
    assert metrics["l0"].shape == (2,)
    assert float(metrics["l0"][1]) < float(metrics["l0"][0])


def test_topk_keeps_exactly_k_and_batchtopk_mean_l0_is_k():
    x = jax.random.normal(jax.random.key(0), (128, D_IN))
    for k in (1, 4, 7):
        topk = SAEConfig(architecture="topk", d_sae=64, k=k)
        sae = init_sae(topk, D_IN, jax.random.key(1))
        l0 = np.asarray((encode(topk, sae, x) > 0).sum(-1))
        assert (l0 == k).all()
        l0_traced = np.asarray((jax.jit(lambda kk: encode(topk, sae, x, k=kk))(jnp.asarray(k)) > 0).sum(-1))
        assert (l0_traced == k).all()
        batch = SAEConfig(architecture="batchtopk", d_sae=64, k=k)
        f = encode(batch, init_sae(batch, D_IN, jax.random.key(1)), x, batch=True)
        per_example = np.asarray((f > 0).sum(-1))
        assert per_example.mean() == k
        assert per_example.min() != per_example.max()  # the budget is shared over the batch, not per example


def test_batchtopk_threshold_inference_keeps_about_k():
    F = planted_features()
    cfg = SAEConfig(architecture="batchtopk", d_sae=48, k=ACTIVE, steps=400, batch_size=256, lr=3e-3)
    sae, metrics = jax.jit(lambda key: train_sae(cfg, activations_of(F, cfg.batch_size), key))(jax.random.key(0))
    assert float(sae["threshold"]) > 0
    assert abs(float(metrics["l0"]) - ACTIVE) < 1.0  # per example with the learned threshold, no batch needed


def test_mmcs():
    F = planted_features()
    scaled_shuffled = 3.0 * F[::-1]  # scale and order do not matter
    assert float(mmcs(scaled_shuffled, F)) == pytest.approx(1.0, abs=1e-6)
    half = jnp.concatenate([F[:16], -F[16:]])  # antipodal directions do not count as found
    sims = F[16:] @ half.T
    expected = (16 + float(sims.max(-1).sum())) / 32
    assert float(mmcs(half, F)) == pytest.approx(expected, abs=1e-6) and expected < 0.95


@pytest.mark.parametrize("settings, words", [
    ({"architecture": "topk", "d_sae": 8, "k": 9}, "larger than the dictionary"),
    ({"architecture": "batchtopk", "d_sae": 8, "k": 9}, "larger than the dictionary"),
    ({"architecture": "relu", "l1_coefficient": 0.0}, "positive L1 coefficient"),
    ({"architecture": "relu", "l1_coefficient": -1.0}, "positive L1 coefficient"),
    ({"architecture": "relu", "d_sae": 0}, "dictionary size"),
    ({"architecture": "topk", "d_sae": -4, "k": 1}, "dictionary size"),
    ({"architecture": "gated"}, "unknown SAE architecture"),
])
def test_bad_config_is_one_line(settings, words):
    with pytest.raises(ConfigError) as err:
        SAEConfig(**settings)
    message = str(err.value)
    assert words in message and "\n" not in message


@pytest.mark.slow  # SAEs trained inside analyze's program, a compile of its own
def test_sae_measure_over_a_trajectory():
    """`sae_measure` is an `analyze` family: one SAE per checkpoint x member, in one compiled program."""
    from mi_jax.analysis.core import analyze_params
    from mi_jax.analysis.sae import sae_measure

    cfg = SAEConfig(architecture="topk", d_sae=32, k=ACTIVE, steps=50, batch_size=64, lr=3e-3)
    stack = jnp.stack([planted_features(s) for s in (1, 2, 3, 4)]).reshape(2, 2, N_FEATURES, D_IN)
    measure = sae_measure(cfg, lambda p, data, key, step: sparse_codes(key, cfg.batch_size) @ p["F"],
                          true_features=lambda p, data: p["F"])
    out = analyze_params({"F": stack}, {"sae": measure}, {})
    assert set(out) == {f"sae/{m}" for m in ("mse", "fve", "l0", "dead", "dead_train", "loss", "mmcs", "firing")}
    assert out["sae/mmcs"].shape == (2, 2) and out["sae/firing"].shape == (2, 2, cfg.d_sae)
    np.testing.assert_array_equal(out["sae/dead"], (out["sae/firing"] == 0).sum(-1))
    np.testing.assert_allclose(out["sae/l0"], ACTIVE)
    direct = jax.jit(lambda F: train_sae(cfg, activations_of(F, cfg.batch_size), jax.random.key(cfg.seed)))
    np.testing.assert_allclose(out["sae/mse"][1, 0], direct(stack[1, 0])[1]["mse"], rtol=1e-4, atol=1e-6)
