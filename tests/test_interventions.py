"""Interventions: ablation (zero / mean / resample; heads, neurons, subspaces), hook-dict patching and
training-time intervention specs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.config import ConfigError
from mi_jax.interventions import (
    ablate_head,
    ablate_neurons,
    check_hook_name,
    fourier_directions,
    head_ablation_measure,
    make_metric,
    parse_interventions,
    patch,
    project_off,
    project_onto,
    resample_ablate,
)
from mi_jax.models.transformer import TransformerConfig, apply, init_params

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, n_ctx=6, d_vocab=10)
PARAMS = init_params(CFG, jax.random.key(0))
CLEAN = jax.random.randint(jax.random.key(1), (8, 6), 0, 10)
CORRUPT = jax.random.randint(jax.random.key(2), (8, 6), 0, 10)
MLP_CFG = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=12, n_ctx=6, d_vocab=10)


def test_patching_every_residual_activation_restores_the_clean_run():
    names = ["blocks.1.hook_resid_pre"]
    clean_logits, clean_cache = apply(PARAMS, CLEAN, CFG, cache=names)
    patched, _ = apply(PARAMS, CORRUPT, CFG, hooks=patch(clean_cache, names))
    np.testing.assert_allclose(patched, clean_logits, atol=1e-5)


def test_patching_one_position_changes_only_what_can_see_it():
    names = ["blocks.0.hook_resid_post"]
    _, clean_cache = apply(PARAMS, CLEAN, CFG, cache=names)
    corrupt_logits, _ = apply(PARAMS, CORRUPT, CFG)
    patched, _ = apply(PARAMS, CORRUPT, CFG, hooks=patch(clean_cache, names, positions=3))
    np.testing.assert_allclose(patched[:, :3], corrupt_logits[:, :3], atol=1e-6)  # causal: earlier positions untouched
    assert not np.allclose(patched[:, 3:], corrupt_logits[:, 3:])


def test_zero_ablating_a_head_removes_its_output():
    _, cache = apply(PARAMS, CLEAN, CFG, hooks=ablate_head(1, 0), cache=["blocks.1.attn.hook_result"])
    assert np.all(np.asarray(cache["blocks.1.attn.hook_result"][:, :, 0]) == 0)
    assert np.any(np.asarray(cache["blocks.1.attn.hook_result"][:, :, 1]) != 0)


def hand_written_logits(params, tokens, cfg, removed=()):
    """An attention-only transformer written out in numpy, heads in `removed` ((layer, head)) left out."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    tokens = np.asarray(tokens)
    n = tokens.shape[1]
    resid = p["W_E"][tokens] + p["W_pos"][:n]
    causal = np.tril(np.ones((n, n), bool))
    for layer in range(cfg.n_layers):
        a = p["blocks"][layer]["attn"]
        out = np.broadcast_to(a["b_O"], resid.shape).copy()
        for h in range(cfg.n_heads):
            if (layer, h) in removed:
                continue
            q, k, v = (resid @ a[f"W_{x}"][h] + a[f"b_{x}"][h] for x in "QKV")  # [batch, pos, d_head]
            scores = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(cfg.d_head), -np.inf)
            pattern = np.exp(scores - scores.max(-1, keepdims=True))
            pattern /= pattern.sum(-1, keepdims=True)
            out += pattern @ v @ a["W_O"][h]
        resid = resid + out
    return resid @ p["W_U"] + p["b_U"]


def test_zero_ablating_a_head_equals_removing_it_from_a_hand_written_forward_pass():
    keys = iter(jax.random.split(jax.random.key(5), 20))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), PARAMS)  # biases too
    np.testing.assert_allclose(apply(params, CLEAN, CFG)[0], hand_written_logits(params, CLEAN, CFG), atol=1e-4)
    ablated = apply(params, CLEAN, CFG, hooks={**ablate_head(0, 1), **ablate_head(1, 0)})[0]
    np.testing.assert_allclose(ablated, hand_written_logits(params, CLEAN, CFG, removed={(0, 1), (1, 0)}), atol=1e-4)
    assert not np.allclose(ablated, hand_written_logits(params, CLEAN, CFG, removed={(0, 1)}), atol=1e-2)


def test_head_ablation_measure_gives_each_heads_total_effect_in_one_vmap():
    params = jax.tree.map(lambda x: 1.5 * x, PARAMS)
    answer, wrong = CLEAN[:, -1], (CLEAN[:, -1] + 1) % 10
    metric = make_metric("logit_diff", answer, wrong)
    zero = head_ablation_measure(CFG, CLEAN, answer, wrong, mode="zero")
    mean = head_ablation_measure(CFG, CLEAN, answer, wrong, mode="mean", reference_tokens=CORRUPT)
    effects = jax.jit(lambda p: (zero(p)["head_ablation"], mean(p)["head_ablation"]))(params)
    base = float(metric(hand_written_logits(params, CLEAN, CFG)))
    for layer in range(2):
        for head in range(2):
            removed = float(metric(hand_written_logits(params, CLEAN, CFG, removed={(layer, head)})))
            np.testing.assert_allclose(effects[0][layer, head], removed - base, atol=1e-4)
    name = "blocks.1.attn.hook_z"
    reference = apply(params, CORRUPT, CFG, cache=[name])[1][name]
    mean_ablated = metric(apply(params, CLEAN, CFG, hooks=ablate_head(1, 0, "mean", reference=reference))[0])
    np.testing.assert_allclose(effects[1][1, 0], mean_ablated - base, atol=1e-4)
    assert np.abs(np.asarray(effects[0])).min() > 1e-3


def test_mean_ablation_uses_the_reference_batch_mean_and_resample_its_activations():
    name = "blocks.0.attn.hook_z"
    _, ref = apply(PARAMS, CORRUPT, CFG, cache=[name])
    _, own = apply(PARAMS, CLEAN, CFG, hooks=ablate_head(0, 1, "mean"), cache=[name])
    z = np.asarray(own[name][:, :, 1])
    np.testing.assert_allclose(z, np.broadcast_to(z[0], z.shape), atol=1e-6)  # every sequence the same: the batch mean
    _, cache = apply(PARAMS, CLEAN, CFG, hooks=ablate_head(0, 1, "mean", reference=ref[name]), cache=[name])
    np.testing.assert_allclose(cache[name][:, :, 1], np.broadcast_to(ref[name][:, :, 1].mean(0), (8, 6, 8)), atol=1e-6)
    _, cache = apply(PARAMS, CLEAN, CFG, hooks=ablate_head(0, 1, "resample", reference=ref[name]), cache=[name])
    np.testing.assert_allclose(cache[name][:, :, 1], ref[name][:, :, 1], atol=1e-6)
    _, plain = apply(PARAMS, CLEAN, CFG, cache=[name])
    np.testing.assert_allclose(cache[name][:, :, 0], plain[name][:, :, 0], atol=1e-6)  # the other head untouched


def test_resample_ablation_reorders_the_batch():
    name = "blocks.0.hook_attn_out"
    _, plain = apply(PARAMS, CLEAN, CFG, cache=[name])
    _, resampled = apply(PARAMS, CLEAN, CFG, hooks=resample_ablate(name, jax.random.key(3)), cache=[name])
    a, b = np.asarray(plain[name]), np.asarray(resampled[name])
    np.testing.assert_allclose(np.sort(a.sum((1, 2))), np.sort(b.sum((1, 2))), rtol=1e-5)  # same rows, reordered
    assert not np.allclose(a, b)


def test_neuron_ablation_zeroes_only_those_neurons():
    params = init_params(MLP_CFG, jax.random.key(4))
    name = "blocks.0.mlp.hook_post"
    _, plain = apply(params, CLEAN, MLP_CFG, cache=[name])
    _, cache = apply(params, CLEAN, MLP_CFG, hooks=ablate_neurons(0, [2, 5]), cache=[name])
    assert np.all(np.asarray(cache[name][..., [2, 5]]) == 0)
    keep = [i for i in range(12) if i not in (2, 5)]
    np.testing.assert_allclose(cache[name][..., keep], plain[name][..., keep])
    assert np.any(np.asarray(plain[name][..., [2, 5]]) != 0)


def test_projecting_off_a_subspace_removes_it_and_projecting_onto_keeps_only_it():
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 3)))[0].T  # orthonormal [3, 16]
    _, off = apply(PARAMS, CLEAN, CFG, hooks=project_off("hook_embed", basis), cache=["hook_embed"])
    _, on = apply(PARAMS, CLEAN, CFG, hooks=project_onto("hook_embed", basis), cache=["hook_embed"])
    embed = np.asarray(PARAMS["W_E"])[np.asarray(CLEAN)]
    np.testing.assert_allclose(np.asarray(off["hook_embed"]) @ basis.T, 0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(on["hook_embed"]) + np.asarray(off["hook_embed"]), embed, atol=1e-6)
    np.testing.assert_allclose(np.asarray(on["hook_embed"]) @ basis.T, embed @ basis.T, atol=1e-6)


def test_projecting_off_the_key_frequency_directions_removes_the_waves_from_the_embedding():
    p, k = 11, 3
    rng = np.random.default_rng(1)
    a = np.arange(p)
    W_E = np.outer(np.cos(2 * np.pi * k * a / p), rng.normal(size=8)) + np.outer(np.sin(2 * np.pi * k * a / p), rng.normal(size=8))
    W_E = W_E + 0.1 * rng.normal(size=(p, 8))
    basis = fourier_directions(W_E, [k])
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-5)
    cleaned = project_off("hook_embed", basis)["hook_embed"](jnp.asarray(W_E[None], jnp.float32))[0]
    waves = np.stack([np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)])  # [2, p]
    np.testing.assert_allclose(waves @ np.asarray(cleaned), 0, atol=1e-4)
    assert np.abs(waves @ W_E).max() > 1.0


def test_interventions_vmap_over_a_checkpoint_series():
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), PARAMS)
    ablated = jax.vmap(lambda p: apply(p, CLEAN, CFG, hooks=ablate_head(1, 1))[0])(stacked)
    one = apply(jax.tree.map(lambda x: 2 * x, PARAMS), CLEAN, CFG, hooks=ablate_head(1, 1))[0]
    np.testing.assert_allclose(ablated[1], one, rtol=1e-5, atol=1e-5)


def test_training_intervention_specs_parse_to_the_hooks_they_name(tmp_path):
    basis = np.linalg.qr(np.random.default_rng(2).normal(size=(16, 2)))[0].T.astype(np.float32)
    np.save(tmp_path / "basis.npy", basis)
    hooks = parse_interventions(
        ("ablate_head:0.1", "zero:blocks.1.hook_attn_out", "project_off:hook_embed:key_freqs", f"project_onto:hook_embed:{tmp_path / 'basis.npy'}"),
        CFG, bases={"key_freqs": basis},
    )
    assert sorted(hooks) == ["blocks.0.attn.hook_z", "blocks.1.hook_attn_out", "hook_embed"]
    expected = {**ablate_head(0, 1), "blocks.1.hook_attn_out": lambda x: jnp.zeros_like(x), "hook_embed": lambda x: x * 0.0}
    np.testing.assert_allclose(apply(PARAMS, CLEAN, CFG, hooks=hooks)[0], apply(PARAMS, CLEAN, CFG, hooks=expected)[0], atol=1e-6)
    mlp = parse_interventions("ablate_neurons:0:1,3", MLP_CFG)
    assert list(mlp) == ["blocks.0.mlp.hook_post"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("zero:blocks.0.hook_atn_out", "unknown hook point 'blocks.0.hook_atn_out' for this model (did you mean 'blocks.0.hook_attn_out'?)"),
        ("ablate_head", "training intervention 'ablate_head' names no hook point"),
        ("freeze:0.1", "training intervention 'freeze:0.1' names no hook point"),
        ("zero:", "training intervention 'zero:' names no hook point"),
        ("ablate_head:0.2", "head 2 is out of range: the model has 2 heads per layer (0..1)"),
        ("ablate_head:3.0", "layer 3 is out of range: the model has 2 layers (0..1)"),
        ("project_off:hook_embed:nowhere", "basis 'nowhere' is neither a known basis"),
    ],
)
def test_bad_intervention_specs_fail_with_one_clear_line(spec, message):
    with pytest.raises(ConfigError) as err:
        parse_interventions((spec,), CFG)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_hook_name_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"did you mean 'blocks.1.attn.hook_pattern'"):
        check_hook_name(CFG, "blocks.1.attn.hook_patern")


# ----------------------------------------------------------------------------- interventions during training


@pytest.mark.slow  # two training runs; test_intervened_runs trains with an intervention in the default suite
def test_training_with_the_mlp_zeroed_equals_training_the_model_without_it():
    """`train.interventions` zeroes the MLP's output at every step; by construction that is the same as
    training an attention-only model from the same initial attention, embedding and unembedding."""
    import dataclasses

    import mi_jax as mj
    from conftest import tiny_grokking
    from mi_jax.tasks.grokking import GrokkingTask
    from mi_jax.training import loop

    cfg = tiny_grokking(steps=50, ckpt_every=25, eval_every=25, interventions=("zero:blocks.0.hook_mlp_out",))
    with_hook = GrokkingTask(cfg)
    removed_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_mlp=None),
                                      train=dataclasses.replace(cfg.train, interventions=()))
    removed = GrokkingTask(removed_cfg)

    def without_mlp(key):
        params = with_hook.init_params(key)
        return {**params, "blocks": {0: {k: v for k, v in params["blocks"][0].items() if k != "mlp"}}}

    removed.init_params = without_mlp
    states = []
    for task in (with_hook, removed):
        trainer = loop.Trainer(task, task.cfg.train)
        first = np.asarray(trainer.init_state()["params"]["W_E"])
        state, metrics = trainer.train_steps(trainer.init_state(), task.cfg.train.ckpt_every, task.cfg.train.eval_every)
        states.append((first, state, metrics))
    (first, hooked, hooked_metrics), (_, plain, plain_metrics) = states
    for name in ("W_E", "W_pos", "W_U"):
        np.testing.assert_allclose(hooked["params"][name], plain["params"][name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hooked_metrics["train_loss"], plain_metrics["train_loss"], rtol=1e-5)
    assert not np.allclose(hooked["params"]["W_E"], first, atol=1e-3)  # it trained
    with pytest.raises(mj.ConfigError, match="names no hook point"):
        GrokkingTask(tiny_grokking(interventions=("ablate:nothing",)))
    with pytest.raises(mj.ConfigError, match="did you mean 'blocks.0.hook_mlp_out'"):
        GrokkingTask(tiny_grokking(interventions=("zero:blocks.0.hook_mlp_outt",)))
