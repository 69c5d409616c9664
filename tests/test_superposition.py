"""Toy models of superposition and boolean AND in superposition: measures, data, training, configs."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mi_jax.analysis import superposition as sp
from mi_jax.analysis.superposition_dynamics import find_jumps
from mi_jax.config import ConfigError, override
from mi_jax.models import toy
from mi_jax.tasks.superposition import SUPERPOSITION_TRAIN, SuperpositionConfig, SuperpositionTask, sparse_features, uniform
from mi_jax.training import loop
from mi_jax.training.optimizer import make_optimizer


def polygon(k: int, radius: float = 1.0) -> np.ndarray:
    """k unit features evenly spaced on a circle: W [2, k]."""
    angles = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(angles), np.sin(angles)]).astype(np.float32)


# ---- measures ----------------------------------------------------------------------------------

def test_dimensionality_of_orthogonal_features_is_one():
    W = jnp.eye(4, 6) * 1.7  # features 0..3 on their own axes, 4 and 5 not represented
    D = sp.dimensionality(W)
    np.testing.assert_allclose(D[:4], 1.0, atol=1e-6)
    np.testing.assert_allclose(D[4:], 0.0, atol=1e-6)
    np.testing.assert_allclose(sp.interference(W)[:4], 0.0, atol=1e-6)


def test_dimensionality_of_antipodal_pair_is_half():
    W = jnp.asarray([[0.9, -0.9]])
    np.testing.assert_allclose(sp.dimensionality(W), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(sp.interference(W), [0.81, 0.81], atol=1e-6)


def test_dimensionality_of_pentagon_is_two_fifths():
    D = sp.dimensionality(jnp.asarray(polygon(5)))
    np.testing.assert_allclose(D, 0.4, atol=1e-6)
    # triangle 2/3, square (two antipodal pairs, orthogonal) 1/2
    np.testing.assert_allclose(sp.dimensionality(jnp.asarray(polygon(3))), 2 / 3, atol=1e-6)
    np.testing.assert_allclose(sp.dimensionality(jnp.asarray(polygon(4))), 1 / 2, atol=1e-6)


@pytest.mark.parametrize("n, m", [(5, 2), (20, 5), (12, 12)])
def test_sum_of_dimensionalities_is_the_rank_for_a_tight_frame(n, m):
    # the columns of any m x n matrix with orthonormal rows (a tight frame) span R^m with equal weight
    rng = np.random.default_rng(n + m)
    q, _ = np.linalg.qr(rng.normal(size=(n, m)))
    W = jnp.asarray(q.T * 2.3, jnp.float32)  # [m, n]
    assert np.isclose(float(sp.dimensionality(W).sum()), m, atol=1e-3)
    assert np.isclose(float(sp.dims_per_feature(W)), m / (2.3**2 * m), rtol=1e-5)


def test_polysemanticity_counts_features_per_hidden_dim():
    W = jnp.asarray([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(sp.polysemanticity(W), [1.0, 3.0], atol=1e-6)


def test_two_feature_phase_classes():
    assert int(sp.classify_two_feature(jnp.asarray([[1.0, 0.01]]))) == 0  # second not represented
    assert int(sp.classify_two_feature(jnp.asarray([[0.01, 1.0]]))) == 1  # dedicated
    assert int(sp.classify_two_feature(jnp.asarray([[1.0, -1.0]]))) == 2  # antipodal


# ---- data --------------------------------------------------------------------------------------

def test_uniform_is_a_reproducible_function_of_its_counters():
    w = jnp.asarray([3, 7], jnp.uint32)
    a = uniform(w, 5, 2, (1000, 4))
    np.testing.assert_array_equal(a, uniform(w, 5, 2, (1000, 4)))
    for other in (uniform(w, 6, 2, (1000, 4)), uniform(w, 5, 3, (1000, 4)), uniform(w + 1, 5, 2, (1000, 4))):
        assert float(jnp.abs(a - other).mean()) > 0.2
    big = np.asarray(uniform(w, 0, 0, (200_000,)))
    assert big.min() >= 0 and big.max() < 1
    assert abs(big.mean() - 0.5) < 0.005 and abs(big.var() - 1 / 12) < 0.002
    hist = np.histogram(big, bins=10, range=(0, 1))[0]
    assert hist.min() > 0.97 * 20_000 and hist.max() < 1.03 * 20_000


@pytest.mark.parametrize("correlation", ["independent", "correlated", "anticorrelated"])
def test_sparse_features_have_the_asked_density(correlation):
    w = jnp.asarray([1, 2], jnp.uint32)
    p = 0.2
    x = np.asarray(sparse_features(w, 0, 0, p, 50_000, 4, correlation))
    active = x != 0
    assert abs(active.mean() - p) < 0.01
    values = x[active]
    assert values.min() >= 0 and values.max() < 1 and abs(values.mean() - 0.5) < 0.01
    both = (active[:, 0] & active[:, 1]).mean()
    expect = {"independent": p * p, "correlated": p, "anticorrelated": 0.0}[correlation]
    assert abs(both - expect) < 0.01


def test_signed_features_for_the_abs_model():
    x = np.asarray(sparse_features(jnp.asarray([1, 2], jnp.uint32), 0, 0, 0.5, 20_000, 3, signed=True))
    values = x[x != 0]
    assert values.min() >= -1 and values.max() < 1 and abs(values.mean()) < 0.02
    assert abs((x != 0).mean() - 0.5) < 0.01


# ---- training ----------------------------------------------------------------------------------

def small_cfg(**kw) -> SuperpositionConfig:
    train = dataclasses.replace(SUPERPOSITION_TRAIN, steps=200, eval_every=100, ckpt_every=100, batch_size=256)
    return SuperpositionConfig(**{"n_features": 5, "n_hidden": 2, "n_probabilities": 4, "importance_decay": 0.9,
                        "eval_batch": 64, "train": train, **kw})


def test_instance_of_vmapped_batch_equals_training_it_alone():
    cfg = small_cfg()
    task = SuperpositionTask(cfg)
    trainer = loop.Trainer(task, cfg.train)
    state = trainer.init_state()
    state, _ = trainer.train_steps(state, 200)
    init_key, data_key = loop.train_keys(cfg.train.seed)
    words = jax.random.key_data(data_key)
    k = 2
    params = jax.tree.map(lambda x: x.astype(jnp.float32), task.init_instance(init_key, k))
    tx = make_optimizer(cfg.train, params, lambda path: False, warm_up=cfg.train.warmup_steps > 0)

    def step(carry, s):
        params, opt = carry
        x = task.instance_batch(words, s, k, task.probability[k])
        grads = jax.grad(task.instance_loss)(params, x, task.importance[k])
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), None

    (alone, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(200)))(params)
    for name in ("W", "b_final"):
        np.testing.assert_allclose(state["params"][name][k], alone[name], rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(state["params"]["W"][k] - state["params"]["W"][k + 1]).max()) > 1e-2


def test_5_2_dense_dedicates_two_dims_and_sparse_forms_a_pentagon():
    train = dataclasses.replace(SUPERPOSITION_TRAIN, steps=3000, eval_every=1000, ckpt_every=1000, batch_size=512)
    cfg = SuperpositionConfig(n_features=5, n_hidden=2, feature_probability=(1.0, 0.05), importance_decay=0.9,
                    eval_batch=64, train=train)
    trainer = loop.Trainer(SuperpositionTask(cfg), cfg.train)
    state = trainer.init_state()
    state, _ = trainer.train_steps(state, 3000)
    W = state["params"]["W"]
    norms, dims = jax.vmap(sp.feature_norms)(W), jax.vmap(sp.dimensionality)(W)
    assert np.all(norms[0, :2] > 0.9) and np.all(norms[0, 2:] < 0.3)  # the two most important, dedicated
    np.testing.assert_allclose(dims[0, :2], 1.0, atol=0.05)
    assert np.all(norms[1] > 0.9)  # all five in 2 dimensions
    np.testing.assert_allclose(dims[1], 0.4, atol=0.03)  # a pentagon
    assert abs(float(dims[1].sum()) - 2.0) < 0.1  # sum_i D_i ~ m


# ---- configs -----------------------------------------------------------------------------------

def test_instance_grid_layout():
    cfg = SuperpositionConfig(n_features=2, n_hidden=1, n_probabilities=3, n_rel_importance=4, prob_min=0.01,
                    rel_importance_min=0.1, rel_importance_max=10.0)
    assert cfg.n_instances == 12
    p, imp = cfg.instance_probability(), cfg.instance_importance()
    np.testing.assert_allclose(p[:4], 1.0)
    np.testing.assert_allclose(p[-1], 0.01, rtol=1e-5)
    np.testing.assert_allclose(imp[:4, 1], [0.1, 10 ** (-1 / 3), 10 ** (1 / 3), 10.0], rtol=1e-5)
    np.testing.assert_allclose(imp[:, 0], 1.0)
    default = SuperpositionConfig()
    np.testing.assert_allclose(default.probabilities, 20.0 ** -np.linspace(0, 1, 8), rtol=1e-5)


def test_bad_tms_configs_fail_with_one_line():
    for kw in ({"prob_max": 1.5}, {"prob_min": 0.0}, {"feature_probability": (0.5, -0.1)},
               {"importance": (1.0, 1.0, -1.0, 1.0, 1.0)}, {"importance_decay": -0.5},
               {"correlation": "correlated", "n_features": 5}):
        with pytest.raises(ConfigError) as e:
            SuperpositionConfig(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="feature_probability"):
        override(SuperpositionConfig(), {"feature_probability": "0.2,1.2"})


def test_no_superposition_possible_is_warned():
    with pytest.warns(UserWarning, match="no superposition"):
        SuperpositionConfig(n_features=3, n_hidden=3)


# ---- boolean AND in superposition --------------------------------------------------------------

from mi_jax.tasks import boolean_and as band  # noqa: E402


def test_and_labels_are_right_for_every_input_with_at_most_two_active():
    n = 6
    x, labels = band.all_inputs(n)
    pairs = [tuple(p) for p in band.pairs(n)]
    assert pairs == list(itertools.combinations(range(n), 2))
    seen = set()
    for row, lab in zip(x, labels):
        on = tuple(np.flatnonzero(row))
        assert len(on) <= 2
        seen.add(on)
        for k, (i, j) in enumerate(pairs):
            assert lab[k] == (i in on and j in on)
    assert len(seen) == 1 + n + math.comb(n, 2) == len(x)


def test_and_metrics_and_random_construction():
    x, labels = band.all_inputs(8)
    perfect = band.metrics(jnp.asarray(labels), jnp.asarray(labels), jnp.asarray(x))
    assert float(perfect["acc"]) == 1 and float(perfect["tpr"]) == 1 and float(perfect["fpr"]) == 0
    always_on = band.metrics(jnp.ones_like(labels), jnp.asarray(labels), jnp.asarray(x))
    assert float(always_on["fpr"]) == 1 and float(always_on["acc"]) == 0
    # every neuron reading every input: all neurons fire on any pair, so every AND reads 1 on 2-hot inputs
    full = band.random_construction(8, 4, q=1.0)
    assert full["tpr"] == 1 and full["fpr"] > 0.5
    assert np.isclose(full["acc"], (1 + 8) / (1 + 8 + 28))  # only the inputs with < 2 ones are right
    # enough random neurons separate the pairs (each pair has neurons no other pair fully shares)
    wide = band.random_construction(8, 400, q=0.3)
    assert wide["acc"] > 0.9 and wide["fpr"] < 0.01


def test_and_training_beats_chance_with_fewer_neurons_than_pairs():
    tc = dataclasses.replace(band.BOOLEAN_AND_TRAIN, steps=600, eval_every=300, ckpt_every=300)
    cfg = band.BooleanAndConfig(n_inputs=10, n_hidden=16, train=tc)  # 45 pairs
    trainer = loop.Trainer(band.BooleanAndTask(cfg), tc)
    state = trainer.init_state()
    first = trainer.evaluate(state["params"])
    state, metrics = trainer.train_steps(state, 600)
    assert float(metrics["acc"][-1, 0]) > 0.9 > float(first["acc"][0])
    assert float(metrics["fpr"][-1, 0]) < 0.01


def test_bad_and_configs():
    with pytest.raises(ConfigError, match="n_inputs must be >= 2"):
        band.BooleanAndConfig(n_inputs=1)
    with pytest.warns(UserWarning, match="no superposition"):
        band.BooleanAndConfig(n_inputs=4, n_hidden=6)


@pytest.mark.slow  # ~16 s cold
def test_abs_model_learns_absolute_value_through_its_relu_layer():
    train = dataclasses.replace(SUPERPOSITION_TRAIN, steps=1000, eval_every=500, ckpt_every=500, lr=1e-2)
    # 10 neurons for 3 features (6 would do: |x| = ReLU(x) + ReLU(-x)) so a dead neuron cannot block it
    cfg = SuperpositionConfig(model="abs", n_features=3, n_hidden=10, feature_probability=(0.5,), eval_batch=512, train=train)
    task = SuperpositionTask(cfg)
    trainer = loop.Trainer(task, cfg.train)
    state = trainer.init_state()
    before = float(trainer.evaluate(state["params"])["test_loss"][0])
    state, _ = trainer.train_steps(state, 1000)
    after = float(trainer.evaluate(state["params"])["test_loss"][0])
    assert after < 1e-3 * before
    x = jnp.asarray([[-0.7, 0.0, 0.4]])
    out = toy.apply(jax.tree.map(lambda a: a[0], state["params"]), x, "abs")
    np.testing.assert_allclose(out, [[0.7, 0.0, 0.4]], atol=0.1)
    # 10 neurons for 3 features leave no need to share: each feature's direction is its own (D_i = 1)
    D = sp.measures(task)["dimensionality"](state["params"], None)
    assert D.shape == (1, 3)
    np.testing.assert_allclose(D[0], 1.0, atol=0.05)


# ---- jumps between geometries during training ---------------------------------------------------

def test_find_jumps_locates_a_ramp_between_two_plateaus():
    steps = np.arange(100) * 20
    before, after = np.array([0.5, 0.5, 0.5, 0.5, 0.1]), np.full(5, 0.4)
    ramp = np.clip((np.arange(100) - 50) / 10, 0, 1)[:, None]  # moves during checkpoints 50..60
    D = before + ramp * (after - before) + 0.002 * np.random.default_rng(0).standard_normal((100, 5))
    loss = np.where(np.arange(100) < 55, 8e-3, 3e-3)
    jumps = find_jumps(steps, D, loss)
    assert len(jumps) == 1
    j = jumps[0]
    assert 45 * 20 <= j.step_from <= 50 * 20 and 60 * 20 <= j.step_to <= 62 * 20
    np.testing.assert_allclose(j.D_before, before, atol=0.02)
    np.testing.assert_allclose(j.D_after, after, atol=0.02)
    assert (j.loss_before, j.loss_after) == (8e-3, 3e-3)


def test_find_jumps_ignores_slow_drift_and_noise():
    steps = np.arange(200) * 10
    drift = np.linspace(0.5, 0.47, 200)[:, None] * np.ones(5)  # settles slowly, never jumps
    D = drift + 0.003 * np.random.default_rng(1).standard_normal((200, 5))
    assert find_jumps(steps, D, np.ones(200)) == []
