"""Activation, path and attribution patching, checked on hand-built and linear cases, and as trajectory measures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_induction import SPAN, V, hand_built_induction_model, unique_probe

from mi_jax.analysis.core import analyze_params
from mi_jax.config import ConfigError
from mi_jax.interventions import (
    agreement,
    attribution_patching,
    make_metric,
    path_patching,
    path_patching_measure,
    patching_measure,
)
from mi_jax.interventions import patching as pt
from mi_jax.interventions.metrics import normalise
from mi_jax.models.transformer import TransformerConfig, apply, init_params

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=8, n_ctx=6, d_vocab=10)
ATTN_CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, n_ctx=6, d_vocab=10)
CLEAN = jax.random.randint(jax.random.key(1), (4, 6), 0, 10)
CORRUPT = CLEAN.at[:, 2].set((CLEAN[:, 2] + 3) % 10)
ANSWER, WRONG = CLEAN[:, -1], (CLEAN[:, -1] + 1) % 10


def random_params(cfg, seed):
    params = init_params(cfg, jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 100), 40))
    return jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), params)  # biases too


def induction_pair():
    """The hand-built induction model, its probe (x A A) and a corruption of the tokens at positions 1, 3, 5, 7
    of the first copy: the induction head at 9, 11, 13, 15 then finds no key whose previous token is its own."""
    params, cfg = hand_built_induction_model()
    clean = unique_probe(4)
    corrupt = np.array(clean)
    rng = np.random.default_rng(1)
    for row in corrupt:
        row[[1, 3, 5, 7]] = rng.permutation(np.setdiff1d(np.arange(V), row[: SPAN + 1]))[:4]  # tokens not in x, A
    queries = np.array([9, 11, 13, 15])
    return params, cfg, clean, jnp.asarray(corrupt), make_metric("logprob", clean[:, queries + 1], positions=queries)


def test_patching_clean_into_clean_gives_one_everywhere():
    params = random_params(CFG, 0)
    metric = make_metric("logit_diff", ANSWER, WRONG)
    layouts = {s: pt.site(s, CFG) for s in ("resid_mid", "mlp_out", "head_by_pos", "k", "pattern")}  # each kind of component axis
    names = sorted({n for layer_names, _ in layouts.values() for n in layer_names})

    @jax.jit
    def clean_into_clean(p):  # the clean run's activations patched into the clean run, scored against the real baselines
        m_clean, m_corrupt, clean_cache, _ = pt.baseline_metrics(p, CFG, CLEAN, CORRUPT, metric, names)
        raw = {s: pt.patched_metrics(p, CFG, clean_cache, CLEAN, metric, n, axes) for s, (n, axes) in layouts.items()}
        return {s: normalise(r, m_clean, m_corrupt) for s, r in raw.items()}, m_clean - m_corrupt

    patched, difference = clean_into_clean(params)
    assert abs(float(difference)) > 0.05  # a real difference to recover
    for site, value in patched.items():
        np.testing.assert_allclose(value, 1.0, atol=1e-4, err_msg=site)
    assert patched["head_by_pos"].shape == (2, 6, 2) and patched["pattern"].shape == (2, 2)


def test_patching_the_whole_residual_stream_at_the_last_layer_recovers_the_clean_metric():
    params = random_params(CFG, 1)
    metric = make_metric("logit_diff", ANSWER, WRONG)
    names, _ = pt.site("resid_pre", CFG)

    @jax.jit
    def patched(p):  # -> the whole stream patched at each layer [layer], and one position at a time [layer, pos]
        m_clean, m_corrupt, clean_cache, _ = pt.baseline_metrics(p, CFG, CLEAN, CORRUPT, metric, names)
        whole = normalise(pt.patched_metrics(p, CFG, clean_cache, CORRUPT, metric, names, ()), m_clean, m_corrupt)
        return whole, *(pt.activation_patching(p, CFG, CLEAN, CORRUPT, metric, "resid_post", b) for b in (None, 5))

    whole, per_position, five_at_a_time = patched(params)
    np.testing.assert_allclose(five_at_a_time, per_position, atol=1e-6)  # lax.map in chunks: the same grid
    np.testing.assert_allclose(whole, 1.0, atol=1e-5)  # the whole stream at any layer carries everything
    assert per_position.shape == (2, 6)
    np.testing.assert_allclose(per_position[1, -1], 1.0, atol=1e-5)  # the metric reads the last position only
    np.testing.assert_allclose(per_position[:, :2], 0.0, atol=1e-5)  # before the corrupted token: nothing to patch
    assert abs(float(per_position[0, 2])) > 0.05


def test_head_patching_finds_the_induction_circuit():
    params, cfg, clean, corrupt, metric = induction_pair()

    @jax.jit
    def grids(p):
        return {s: pt.activation_patching(p, cfg, clean, corrupt, metric, s) for s in ("head", "q", "k")}

    patched = grids(params)
    np.testing.assert_allclose(patched["head"], [[1, 0], [1, 0]], atol=1e-3)
    np.testing.assert_allclose(patched["k"], [[0, 0], [1, 0]], atol=1e-3)  # the induction head is restored through its keys
    np.testing.assert_allclose(patched["q"], 0, atol=1e-3)


def test_path_patching_prev_token_head_to_induction_head_is_a_k_path():
    params, cfg, clean, corrupt, metric = induction_pair()
    paths = jax.jit(lambda p: path_patching(p, cfg, clean, corrupt, metric))(params)  # [sender, receiver]
    assert float(paths["k"][0, 0]) > 0.99
    other = np.concatenate([np.asarray(paths["k"]).ravel()[1:], np.asarray(paths["q"]).ravel(), np.asarray(paths["v"]).ravel()])
    np.testing.assert_allclose(other, 0, atol=1e-3)


def test_attribution_patching_equals_activation_patching_for_a_model_linear_in_the_patched_activation():
    metric = make_metric("logit_diff", ANSWER, WRONG)
    # no layer norm: the logits are linear in the last layer's head outputs, MLP output and residual stream
    cases = ((ATTN_CFG, "head_by_pos"), (CFG, "mlp_out"))
    params = [random_params(cfg, 2) for cfg, _ in cases]

    @jax.jit
    def both(params):
        return [(pt.activation_patching(p, cfg, CLEAN, CORRUPT, metric, site),
                 attribution_patching(p, cfg, CLEAN, CORRUPT, metric, site)) for p, (cfg, site) in zip(params, cases)]

    for (cfg, site), (patched, approx) in zip(cases, both(params)):
        np.testing.assert_allclose(approx[-1], patched[-1], atol=1e-4, err_msg=site)
        assert np.abs(np.asarray(patched[-1])).max() > 0.05
        if site == "head_by_pos":  # layer 0 is read by layer 1's attention (nonlinear): only approximated
            assert not np.allclose(approx[0], patched[0], atol=1e-3)


def test_agreement_reports_correlation_and_max_error_per_checkpoint():
    patched = jnp.asarray([[[1.0, 0.0], [0.5, 0.2]], [[0.0, 1.0], [1.0, 0.0]]])  # [time, layer, head]
    approx = patched.at[1].set(jnp.asarray([[1.0, 0.0], [0.0, 1.0]]))
    fit = agreement(approx, patched, n_leading=1)
    np.testing.assert_allclose(fit["correlation"], [1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(fit["max_error"], [0.0, 1.0], atol=1e-6)


def test_patching_results_over_a_trajectory_equal_the_per_checkpoint_results():
    per = [random_params(ATTN_CFG, s) for s in range(4)]  # time 4, or time 2 x seed 2
    patching = {"patching": patching_measure(ATTN_CFG, CLEAN, CORRUPT, ANSWER, WRONG, sites=("head",), attribution=True)}
    paths = {"paths": path_patching_measure(ATTN_CFG, CLEAN, CORRUPT, ANSWER, WRONG, metric="logprob")}
    over_time = analyze_params(jax.tree.map(lambda *xs: jnp.stack(xs), *per), patching, member_axis=False)  # [time 4, ...]
    seeded = analyze_params(jax.tree.map(lambda *xs: jnp.stack(xs).reshape(2, 2, *xs[0].shape), *per), paths)  # [time, member]
    assert over_time["head_patching"].shape == (4, 2, 2) and over_time["head_attribution_correlation"].shape == (4,)
    assert seeded["path_patching_k"].shape == (2, 2, 2, 2)
    one_patching, one_paths = jax.jit(patching["patching"]), jax.jit(paths["paths"])
    for i, p in enumerate(per):
        for name, value in one_patching(p).items():
            np.testing.assert_allclose(over_time[name][i], value, rtol=1e-4, atol=1e-5, err_msg=name)
        for name, value in one_paths(p).items():
            np.testing.assert_allclose(seeded[name][i // 2, i % 2], value, rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.abs(one_paths(p)["path_patching_k"]).max() > 0.01


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: patching_measure(CFG, CLEAN, CORRUPT[:, :5], ANSWER, WRONG), "clean and corrupted batches must have the same shape, got (4, 6) and (4, 5)"),
        (lambda: patching_measure(CFG, CLEAN, CORRUPT, ANSWER, WRONG, positions=6), "position 6 is out of range for sequences of 6 tokens"),
        (lambda: patching_measure(CFG, CLEAN, CORRUPT, ANSWER[:3], WRONG), "answer tokens have shape (3,), expected [4] or [4, 1]"),
        (lambda: patching_measure(CFG, CLEAN, CORRUPT, ANSWER), "the logit_diff metric needs wrong-answer tokens"),
        (lambda: patching_measure(CFG, CLEAN, CORRUPT, ANSWER, WRONG, sites=("heads",)), "unknown patching site 'heads'"),
        (lambda: patching_measure(ATTN_CFG, CLEAN, CORRUPT, ANSWER, WRONG, sites=("mlp_out",)), "site 'mlp_out' needs a model with MLPs"),
        (lambda: path_patching_measure(CFG, CLEAN, CORRUPT, ANSWER, WRONG, receiver_layer=2), "layer 2 is out of range: the model has 2 layers (0..1)"),
        (lambda: path_patching_measure(CFG, CLEAN, CORRUPT, ANSWER, WRONG, sender_layer=1), "the sender layer (1) must come before the receiver layer (1)"),
    ],
)
def test_bad_patching_input_fails_with_one_clear_line(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_apply_refuses_an_unknown_hook_point_and_suggests_the_nearest():
    with pytest.raises(ConfigError) as err:
        apply(init_params(CFG, jax.random.key(0)), CLEAN, CFG, hooks={"blocks.0.attn.hook_patern": lambda x: x})
    assert str(err.value) == "unknown hook point 'blocks.0.attn.hook_patern' for this model (did you mean 'blocks.0.attn.hook_pattern'?)"
