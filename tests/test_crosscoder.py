"""Crosscoders across checkpoints and feature lineages across per-checkpoint SAEs (mi_jax.analysis.crosscoder)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.analysis.crosscoder import (
    CrosscoderConfig, birth_order, births, decoder_norms, decoder_similarity, lineages, match_features,
    stacked_activations, train_crosscoder)
from mi_jax.analysis.sae import top_mask
from mi_jax.config import ConfigError

N_FEATURES, D_IN, T, ACTIVE, BATCH = 12, 16, 4, 2, 128
ABSENT = 2  # planted feature 0 is absent (zero direction) at checkpoints 0..ABSENT-1


def planted_series() -> jax.Array:
    """[T, N_FEATURES, D_IN]: unit feature directions that drift a little between checkpoints; feature 0
    does not exist before checkpoint ABSENT."""
    F = jax.random.normal(jax.random.key(1), (N_FEATURES, D_IN))
    Ft = F[None] / jnp.linalg.norm(F, axis=1, keepdims=True)[None]
    Ft = Ft + 0.15 * jax.random.normal(jax.random.key(2), (T, N_FEATURES, D_IN))
    Ft = Ft / jnp.linalg.norm(Ft, axis=-1, keepdims=True)
    return Ft.at[:ABSENT, 0].set(0.0)


def series_activations(Ft: jax.Array):
    """activations_fn(key, step) -> [BATCH, T, D_IN]: the same sparse codes (exactly ACTIVE features on,
    magnitudes in [0.5, 1.5]) read through each checkpoint's feature directions."""
    def acts(key, step):
        k_on, k_mag = jax.random.split(key)
        on = top_mask(jax.random.uniform(k_on, (BATCH, N_FEATURES)), ACTIVE)
        codes = on * jax.random.uniform(k_mag, (BATCH, N_FEATURES), minval=0.5, maxval=1.5)
        return jnp.einsum("bn,tnd->btd", codes, Ft)
    return acts


@pytest.mark.parametrize("architecture, settings, steps", [
    ("topk", {"k": ACTIVE}, 800),
    ("relu", {"l1_coefficient": 0.3}, 600),
])
def test_absent_feature_has_zero_decoder_norm_there(architecture, settings, steps):
    Ft = planted_series()
    cfg = CrosscoderConfig(architecture=architecture, d_sae=24, steps=steps, batch_size=BATCH, lr=3e-3,
                           dead_after=50, **settings)
    params, metrics = jax.jit(lambda key: train_crosscoder(cfg, series_activations(Ft), key))(jax.random.key(0))
    assert params["W_enc"].shape == (T, D_IN, 24) and params["W_dec"].shape == (24, T, D_IN)
    assert metrics["fve_per_checkpoint"].shape == (T,) and metrics["mse_per_checkpoint"].shape == (T,)
    assert float(metrics["fve_per_checkpoint"].min()) > 0.9

    # each planted feature (its directions over all checkpoints) has a latent that matches it
    W = np.asarray(params["W_dec"]).reshape(24, -1)
    planted = np.asarray(Ft).transpose(1, 0, 2).reshape(N_FEATURES, -1)
    cos = decoder_similarity(planted, W)  # [N_FEATURES, d_sae]
    assert cos.max(1).min() > 0.95

    norms = np.asarray(decoder_norms(params))  # [d_sae, T]
    latent = int(cos[0].argmax())
    relative = norms[latent] / norms[latent].max()
    assert (relative[:ABSENT] < 0.1).all(), relative
    assert (relative[ABSENT:] > 0.5).all(), relative
    assert births(norms)[latent] == ABSENT
    if architecture == "topk":
        assert float(metrics["l0"]) == ACTIVE
        np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, rtol=1e-5)


def test_births_and_order():
    norms = np.array([[0.0, 0.05, 1.0, 1.0],   # born at 2 (0.05 < 0.1 of max)
                      [1.0, 1.0, 0.0, 0.0],    # born at 0, dies at 2
                      [0.0, 0.0, 0.0, 0.0],    # never
                      [0.0, 0.5, 0.6, 0.2]])   # born at 1
    np.testing.assert_array_equal(births(norms), [2, 0, -1, 1])
    np.testing.assert_array_equal(births(norms, threshold=0.01), [1, 0, -1, 1])
    np.testing.assert_array_equal(birth_order(norms), [1, 3, 0, 2])


def _random_decoder(seed: int, d_sae: int = 16, d_in: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(d_sae, d_in))


def test_match_features_recovers_a_permutation():
    rng = np.random.default_rng(0)
    dec_a = _random_decoder(1)
    p = rng.permutation(16)
    dec_b = 2.0 * dec_a[p] + 0.01 * rng.normal(size=dec_a.shape)  # row j of b is feature p[j] of a
    perm, sim = match_features(dec_a, dec_b)
    np.testing.assert_array_equal(perm, np.argsort(p))
    np.testing.assert_array_equal(p[perm], np.arange(16))
    assert sim.shape == (16,) and sim.min() > 0.99
    S = decoder_similarity(dec_a, dec_b)
    assert S.shape == (16, 16) and np.abs(S).max() <= 1 + 1e-9

    # a smaller dictionary: the features it cannot hold stay unmatched
    perm, sim = match_features(dec_a, dec_b[:10])
    matched = perm >= 0
    assert matched.sum() == 10 and np.isnan(sim[~matched]).all()
    np.testing.assert_array_equal(p[perm[matched]], np.arange(16)[matched])


def test_lineages_follow_features_through_a_permuted_series():
    rng = np.random.default_rng(3)
    decs, where = [_random_decoder(2)], [np.arange(16)]  # where[t][i]: row of checkpoint t holding feature i
    for t in range(1, 5):
        p = rng.permutation(16)
        decs.append(decs[-1][p] + 0.02 * rng.normal(size=(16, 8)))  # drift a little, and shuffle
        where.append(np.argsort(p)[where[-1]])
    index, sim = lineages(np.stack(decs))
    assert index.shape == (5, 16) and sim.shape == (4, 16)
    np.testing.assert_array_equal(index, np.stack(where))
    assert sim.min() > 0.98


def test_different_checkpoint_shapes_are_one_line_errors():
    fns = [lambda key, step: jnp.zeros((8, 16)), lambda key, step: jnp.zeros((8, 16)),
           lambda key, step: jnp.zeros((8, 12))]
    with pytest.raises(ConfigError) as err:
        stacked_activations(fns)
    message = str(err.value)
    assert "\n" not in message and "checkpoint 2" in message and "(8, 12)" in message

    cfg = CrosscoderConfig(d_sae=8, k=2, steps=1, batch_size=8)
    with pytest.raises(ConfigError) as err:  # activations_fn returning a per-checkpoint list
        train_crosscoder(cfg, lambda key, step: [fn(key, step) for fn in fns], jax.random.key(0))
    assert "\n" not in str(err.value) and "same activation shape" in str(err.value)

    with pytest.raises(ConfigError) as err:
        CrosscoderConfig(k=9, d_sae=8)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # a second training of the same crosscoder
def test_stacked_activations_equal_a_list():
    """Per-checkpoint activation functions stacked (same key for all) == a list-returning activations_fn."""
    Ft = planted_series()
    per_checkpoint = [(lambda key, step, F=Ft[t]: series_activations(F[None])(key, step)[:, 0])
                      for t in range(T)]
    stacked = stacked_activations(per_checkpoint)
    key = jax.random.key(5)
    np.testing.assert_allclose(stacked(key, 0), series_activations(Ft)(key, 0), rtol=1e-5, atol=1e-6)
    cfg = CrosscoderConfig(d_sae=16, k=ACTIVE, steps=5, batch_size=BATCH)
    a, _ = train_crosscoder(cfg, stacked, key)
    b, _ = train_crosscoder(cfg, lambda kk, s: [fn(kk, s) for fn in per_checkpoint], key)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
