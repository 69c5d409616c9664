"""The transformer's fast paths (`models/fast.py`) compute the reference forward pass: the same
logits, cached activations and gradients as `apply(..., fast=False)`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.models import fast
from mi_jax.tasks.grokking import all_pairs

CONFIGS = {
    "layer norm, MLP, 2 layers": dict(n_layers=2, layer_norm=True, d_mlp=40),
    "no layer norm, MLP, 1 layer": dict(n_layers=1, layer_norm=False, d_mlp=40),
    "attention only, 2 layers": dict(n_layers=2, layer_norm=False, d_mlp=None),
}


def model(**kw):
    cfg = mj.TransformerConfig(d_model=24, n_heads=3, n_ctx=7, d_vocab=11, d_vocab_out=9, **kw)
    params = mj.init_params(cfg, jax.random.key(2))
    # non-zero biases and layer-norm offsets, so every term of the forward pass is exercised
    keys = iter(jax.random.split(jax.random.key(3), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), params)
    return cfg, params


def close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=atol)


# the 2-layer model with layer norm takes ~20 s op by op (compiling is no faster): in the slow suite;
# layer norm's fast path is still checked by the hooked-attention test below
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "layer norm, MLP, 2 layers"
                                  else name for name in CONFIGS])
def test_fast_forward_and_gradients_equal_the_reference(name):
    cfg, params = model(**CONFIGS[name])
    tokens = jax.random.randint(jax.random.key(4), (40, 6), 0, cfg.d_vocab)  # batch 40 > vocab 11: the table path

    def loss(p, fast, **kw):
        logits, _ = mj.apply(p, tokens, cfg, fast=fast, **kw)
        return jax.nn.log_softmax(logits[:, -1]).mean(), logits

    for kw in ({}, {"last_position_only": True}):  # every position; the last one (the training fast path)
        (ref_loss, ref_logits), ref_grads = jax.value_and_grad(lambda p: loss(p, False, **kw), has_aux=True)(params)
        (fast_loss, fast_logits), fast_grads = jax.value_and_grad(lambda p: loss(p, True, **kw), has_aux=True)(params)
        close(fast_logits, ref_logits, 1e-5)
        close(fast_loss, ref_loss, 1e-6)
        close(fast_grads, ref_grads, 1e-5)
    assert fast_logits.shape == (40, 1, cfg.d_vocab_out)


@pytest.mark.parametrize("name", [name for name in CONFIGS if "1 layer" not in name])  # one orientation path for all: two suffice
def test_hooked_attention_in_the_fast_orientation_equals_the_reference(name):
    cfg, params = model(**CONFIGS[name])
    tokens = jax.random.randint(jax.random.key(5), (4, 6), 0, cfg.d_vocab)
    names = [f"blocks.{layer}.attn.{hook}" for layer in range(cfg.n_layers)
             for hook in ("hook_attn_scores", "hook_pattern", "hook_z")]
    sharpen = {"blocks.0.attn.hook_pattern": lambda a: a**2 / (a**2).sum(-1, keepdims=True)}  # a hook that edits

    def run(p, fast):
        logits, cache = mj.apply(p, tokens, cfg, cache=names, hooks=sharpen, fast=fast)
        return logits.sum() + sum(jnp.nan_to_num(v, neginf=0.0).sum() for v in cache.values()), (logits, cache)

    (_, (ref_logits, ref_cache)), ref_grads = jax.value_and_grad(lambda p: run(p, False), has_aux=True)(params)
    (_, (fast_logits, fast_cache)), fast_grads = jax.value_and_grad(lambda p: run(p, True), has_aux=True)(params)
    close(fast_logits, ref_logits, 1e-5)
    for hook in names:
        ref, fast = np.asarray(ref_cache[hook]), np.asarray(fast_cache[hook])
        assert fast.shape == ref.shape, hook
        np.testing.assert_array_equal(np.isneginf(fast), np.isneginf(ref))  # the same masked (future) keys
        close(np.where(np.isneginf(fast), 0, fast), np.where(np.isneginf(ref), 0, ref), 1e-5)
    close(fast_grads, ref_grads, 1e-4)


def test_attention_in_query_blocks_equals_the_reference():
    # 131 positions: two uneven blocks of queries (65, 66); the pattern cached, not edited, comes from the
    # blocks too, 0 at the future keys as the reference's softmax gives
    cfg = mj.TransformerConfig(n_layers=2, d_model=24, n_heads=3, n_ctx=132, d_vocab=11, d_mlp=None)
    params = mj.init_params(cfg, jax.random.key(2))
    tokens = jax.random.randint(jax.random.key(4), (2, 131), 0, cfg.d_vocab)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]

    def run(p, is_fast, **kw):
        logits, cache = mj.apply(p, tokens, cfg, fast=is_fast, **kw)
        return jax.nn.log_softmax(logits).mean() + sum(v.mean() for v in cache.values()), (logits, cache)

    for kw in ({}, {"cache": names}):
        (_, (ref_logits, ref_cache)), ref_grads = jax.value_and_grad(lambda p: run(p, False, **kw), has_aux=True)(params)
        (_, (fast_logits, fast_cache)), fast_grads = jax.value_and_grad(lambda p: run(p, True, **kw), has_aux=True)(params)
        close(fast_logits, ref_logits, 1e-5)
        close(fast_cache, ref_cache, 1e-6)
        close(fast_grads, ref_grads, 1e-5)
    assert sorted(fast_cache) == names and (np.asarray(fast_cache[names[0]])[:, :, 0, 1:] == 0).all()


def test_the_loss_unembedded_in_blocks_of_rows_equals_the_loss_of_the_whole_logits(monkeypatch):
    from mi_jax.models import ops

    monkeypatch.setattr(ops, "BLOCK_LOGITS", 1000)  # 37 rows x 100 logits: 4 blocks of 10 rows, 3 of them padding
    keys = jax.random.split(jax.random.key(0), 4)
    x, W, b = (jax.random.normal(k, shape) for k, shape in zip(keys, [(37, 8), (8, 100), (100,)]))
    labels = jax.random.randint(keys[3], (37,), 0, 100)
    whole = lambda x, W, b: ops.cross_entropy(x @ W + b, labels)  # noqa: E731
    blocked = lambda x, W, b: ops.unembedded_cross_entropy(x, W, b, labels)  # noqa: E731
    assert "scan" in str(jax.make_jaxpr(blocked)(x, W, b))  # the blocks are mapped in turn
    expected = -jnp.take_along_axis(jax.nn.log_softmax(x @ W + b), labels[:, None], 1)[:, 0]
    close(whole(x, W, b), expected, 1e-6)
    close(blocked(x, W, b), expected, 1e-6)
    close(jax.grad(lambda *a: blocked(*a).sum(), (0, 1, 2))(x, W, b), jax.grad(lambda *a: whole(*a).sum(), (0, 1, 2))(x, W, b), 1e-5)
    members = jnp.stack([W, 2 * W])  # vmapped, as an ensemble's analysis runs it
    close(jax.vmap(lambda W: blocked(x, W, b))(members), jax.vmap(lambda W: whole(x, W, b))(members), 1e-5)
    # the model's label_loss: the cross-entropy of `apply`'s logits, the last positions only where asked
    cfg, params = model(**CONFIGS["attention only, 2 layers"])
    tokens = jax.random.randint(keys[3], (12, 6), 0, cfg.d_vocab)
    logits, _ = mj.apply(params, tokens, cfg)
    loss, _ = mj.label_loss(params, tokens, tokens[:, 3:] % cfg.d_vocab_out, cfg, logit_positions=slice(3, None))
    close(loss, ops.cross_entropy(logits[:, 3:], tokens[:, 3:] % cfg.d_vocab_out), 1e-5)


def test_grid_forward_equals_the_reference_forward_on_every_modular_input():
    cfg = mj.GrokkingConfig(p=13, model=mj.TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64))
    params = mj.init_params(cfg.transformer, jax.random.key(1))
    keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), params)  # biases nonzero too
    tokens = jnp.asarray(all_pairs(cfg.p, cfg.op)[0])  # [a*p + b, (a, b, =)]
    hook = "blocks.0.mlp.hook_post"
    logits, cache = jax.jit(lambda P: mj.apply(P, tokens, cfg.transformer, cache=[hook], fast=False))(params)
    grid_logits, grid_acts = jax.jit(lambda P: fast.grid_forward(P, cfg.transformer, cfg.p))(params)
    np.testing.assert_allclose(grid_logits, logits[:, -1], atol=2e-5)
    np.testing.assert_allclose(grid_acts, cache[hook][:, -1], atol=2e-5)
