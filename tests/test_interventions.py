"""Interventions: ablation and patching through the hook mechanism."""

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import TransformerConfig, apply, init_params
from mi_jax.interventions import ablate_head, patch, resample_ablate

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, n_ctx=6, d_vocab=10)
PARAMS = init_params(CFG, jax.random.key(0))
CLEAN = jax.random.randint(jax.random.key(1), (8, 6), 0, 10)
CORRUPT = jax.random.randint(jax.random.key(2), (8, 6), 0, 10)


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


def test_mean_and_resample_ablation_keep_batch_statistics():
    _, cache = apply(PARAMS, CLEAN, CFG, hooks=ablate_head(0, 1, "mean"), cache=["blocks.0.attn.hook_z"])
    z = np.asarray(cache["blocks.0.attn.hook_z"][:, :, 1])
    np.testing.assert_allclose(z, np.broadcast_to(z[0, 0], z.shape), atol=1e-6)
    name = "blocks.0.hook_attn_out"
    _, plain = apply(PARAMS, CLEAN, CFG, cache=[name])
    _, resampled = apply(PARAMS, CLEAN, CFG, hooks=resample_ablate(name, jax.random.key(3)), cache=[name])
    a, b = np.asarray(plain[name]), np.asarray(resampled[name])
    np.testing.assert_allclose(np.sort(a.sum((1, 2))), np.sort(b.sum((1, 2))), rtol=1e-5)  # same rows, reordered
    assert not np.allclose(a, b)


def test_interventions_vmap_over_a_checkpoint_series():
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), PARAMS)
    ablated = jax.vmap(lambda p: apply(p, CLEAN, CFG, hooks=ablate_head(1, 1))[0])(stacked)
    one = apply(jax.tree.map(lambda x: 2 * x, PARAMS), CLEAN, CFG, hooks=ablate_head(1, 1))[0]
    np.testing.assert_allclose(ablated[1], one, rtol=1e-5, atol=1e-5)
