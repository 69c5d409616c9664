"""The hooked transformer: TransformerLens hook names and shapes, hooks that replace activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax import ConfigError, TransformerConfig, apply, hook_names, init_params, label_loss

CFG = TransformerConfig(n_layers=2, d_model=24, n_heads=3, d_head=8, d_mlp=40, layer_norm=True, n_ctx=7, d_vocab=11, d_vocab_out=9)
B, P = 4, 6


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(1), (B, P), 0, CFG.d_vocab)


def test_weight_names_and_shapes_follow_the_papers_conventions(params):
    h, d, e, m = CFG.n_heads, CFG.d_model, CFG.d_head, CFG.d_mlp
    assert params["W_E"].shape == (CFG.d_vocab, d)
    assert params["W_pos"].shape == (CFG.n_ctx, d)
    attn, mlp = params["blocks"][1]["attn"], params["blocks"][1]["mlp"]
    assert attn["W_Q"].shape == attn["W_K"].shape == attn["W_V"].shape == (h, d, e)
    assert attn["W_O"].shape == (h, e, d)
    assert mlp["W_in"].shape == (d, m) and mlp["W_out"].shape == (m, d)
    assert params["W_U"].shape == (d, CFG.d_vocab_out)
    assert params["ln_final"]["w"].shape == (d,)


def test_every_hook_point_has_the_transformerlens_name_and_shape(params, tokens):
    names = hook_names(CFG)
    expected_layer = [
        "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
        "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "hook_attn_out",
        "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
    ]
    assert names == ["hook_embed", "hook_pos_embed"] + [
        f"blocks.{l}.{n}" for l in range(2) for n in expected_layer
    ] + ["ln_final.hook_normalized", "logits"]
    _, cache = apply(params, tokens, CFG, cache="all")
    h, e, d = CFG.n_heads, CFG.d_head, CFG.d_model
    assert cache["blocks.1.attn.hook_q"].shape == (B, P, h, e)
    assert cache["blocks.1.attn.hook_pattern"].shape == (B, h, P, P)
    assert cache["blocks.0.attn.hook_result"].shape == (B, P, h, d)
    assert cache["blocks.0.mlp.hook_post"].shape == (B, P, CFG.d_mlp)
    assert cache["blocks.1.hook_resid_post"].shape == (B, P, d)
    assert cache["logits"].shape == (B, P, CFG.d_vocab_out)
    pattern = np.asarray(cache["blocks.0.attn.hook_pattern"])
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(pattern[0, 0], k=1) == 0), "attention must be causal"


def test_cache_returns_only_what_was_asked(params, tokens):
    _, cache = apply(params, tokens, CFG, cache=["blocks.0.hook_mlp_out"])
    assert list(cache) == ["blocks.0.hook_mlp_out"]


def test_per_head_results_sum_to_the_attention_output(params, tokens):
    _, cache = apply(params, tokens, CFG, cache=["blocks.1.attn.hook_result", "blocks.1.hook_attn_out"])
    b_O = params["blocks"][1]["attn"]["b_O"]
    np.testing.assert_allclose(
        cache["blocks.1.attn.hook_result"].sum(2) + b_O, cache["blocks.1.hook_attn_out"], atol=1e-5
    )


def test_a_hook_replaces_the_activation_downstream(params, tokens):
    clean, _ = apply(params, tokens, CFG)
    zeroed, cache = apply(
        params, tokens, CFG,
        hooks={"blocks.1.hook_mlp_out": jnp.zeros_like}, cache=["blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"],
    )
    assert np.all(np.asarray(cache["blocks.1.hook_mlp_out"]) == 0)
    assert not np.allclose(clean, zeroed)
    # removing the block-1 MLP by hand gives the same logits as zero-ablating its output
    _, mid = apply(params, tokens, CFG, cache=["blocks.1.hook_resid_mid"])
    np.testing.assert_allclose(cache["blocks.1.hook_resid_post"], mid["blocks.1.hook_resid_mid"], atol=1e-6)


def test_patching_an_attention_pattern_changes_z_as_it_should(params, tokens):
    uniform = lambda pat: jnp.tril(jnp.ones_like(pat)) / jnp.arange(1, P + 1)[:, None]  # noqa: E731
    _, cache = apply(params, tokens, CFG, hooks={"blocks.0.attn.hook_pattern": uniform},
                     cache=["blocks.0.attn.hook_v", "blocks.0.attn.hook_z"])
    v = np.asarray(cache["blocks.0.attn.hook_v"])
    expected_last = v.mean(1)  # the last query attends uniformly to all positions
    np.testing.assert_allclose(cache["blocks.0.attn.hook_z"][:, -1], expected_last, atol=1e-5)


def test_hooks_work_under_jit_vmap_and_scan(params, tokens):
    def head_ablated_loss(p, toks):
        ablate = lambda z: z.at[:, :, 0].set(0.0)  # noqa: E731
        logits, _ = apply(p, toks, CFG, hooks={"blocks.1.attn.hook_z": ablate})
        return logits.mean()

    jitted = jax.jit(head_ablated_loss)(params, tokens)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    vmapped = jax.jit(jax.vmap(head_ablated_loss, (0, None)))(stacked, tokens)
    _, scanned = jax.lax.scan(lambda c, p: (c, head_ablated_loss(p, tokens)), 0, stacked)
    np.testing.assert_allclose(vmapped, [jitted, jitted], rtol=1e-5)
    np.testing.assert_allclose(scanned, [jitted, jitted], rtol=1e-5)
    grads = jax.grad(head_ablated_loss)(params, tokens)
    assert np.all(np.asarray(grads["blocks"][1]["attn"]["W_Q"][0]) == 0), "ablated head gets no query gradient"


def test_attention_only_model_without_positions():
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, positional_embedding="none", n_ctx=5, d_vocab=7)
    p = init_params(cfg, jax.random.key(0))
    assert "mlp" not in p["blocks"][0] and "W_pos" not in p
    logits, _ = apply(p, jnp.zeros((2, 5), jnp.int32), cfg)
    assert logits.shape == (2, 5, 7)
    assert not any("mlp" in n for n in hook_names(cfg))


def test_bad_hook_use_fails_with_one_clear_line(params, tokens):
    with pytest.raises(ConfigError, match="unknown hook point"):
        apply(params, tokens, CFG, cache=["blocks.7.hook_resid_post"])
    with pytest.raises(ConfigError, match="returned shape"):
        apply(params, tokens, CFG, hooks={"blocks.0.hook_attn_out": lambda x: x[:, :1]})
    with pytest.raises(ConfigError, match="exceeds model.n_ctx"):
        apply(params, jnp.zeros((1, 8), jnp.int32), CFG)


def test_config_rejects_heads_that_do_not_divide_d_model():
    with pytest.raises(ConfigError, match="not divisible"):
        TransformerConfig(d_model=30, n_heads=4)


def test_shortformer_positions_reach_queries_and_keys_only():
    # TransformerLens's shortformer: q = (ln1(resid) + W_pos) W_Q, k likewise, v = ln1(resid) W_V, and
    # the residual stream never holds the positions
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, layer_norm=True, n_ctx=8, d_vocab=11,
                            positional_embedding="shortformer")
    params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
    tokens = jax.random.randint(jax.random.key(2), (3, 7), 0, 11)
    names = ["hook_embed", "blocks.0.hook_resid_pre", "blocks.1.ln1.hook_normalized", "blocks.1.attn.hook_q",
             "blocks.1.attn.hook_k", "blocks.1.attn.hook_v"]
    logits, cache = apply(params, tokens, cfg, cache=names)
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_pre"], cache["hook_embed"])
    a, x, pos = params["blocks"][1]["attn"], cache["blocks.1.ln1.hook_normalized"], params["W_pos"][:7]
    project = lambda inp, W, b: np.einsum("bpd,hde->bphe", inp, W) + b  # noqa: E731
    np.testing.assert_allclose(cache["blocks.1.attn.hook_q"], project(x + pos, a["W_Q"], a["b_Q"]), atol=1e-5)
    np.testing.assert_allclose(cache["blocks.1.attn.hook_k"], project(x + pos, a["W_K"], a["b_K"]), atol=1e-5)
    np.testing.assert_allclose(cache["blocks.1.attn.hook_v"], project(x, a["W_V"], a["b_V"]), atol=1e-5)
    reference, _ = apply(params, tokens, cfg, fast=False)
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    last, _ = apply(params, tokens, cfg, last_position_only=True)
    np.testing.assert_allclose(last[:, 0], logits[:, -1], atol=1e-5)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_logits_at_some_positions_are_those_positions_of_the_full_logits(layer_norm):
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=11, n_ctx=9, d_mlp=None, layer_norm=layer_norm)
    params = init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 8), 0, 11)
    names = ["blocks.1.attn.hook_pattern"]
    logits, cache = apply(params, tokens, cfg, cache=names)
    part, part_cache = apply(params, tokens, cfg, cache=names, logit_positions=slice(4, -1))
    assert part.shape == (3, 3, 11)
    np.testing.assert_allclose(part, logits[:, 4:-1], atol=1e-5)
    np.testing.assert_array_equal(part_cache[names[0]], cache[names[0]])  # the layers still see every position
    with pytest.raises(ConfigError, match="not both"):
        apply(params, tokens, cfg, last_position_only=True, logit_positions=slice(4, None))


@pytest.mark.parametrize("positional_embedding", ["learned", "shortformer"])
def test_a_run_continued_from_past_keys_and_values_is_the_tail_of_the_whole_run(positional_embedding):
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=11, n_ctx=9, d_mlp=32, layer_norm=True,
                            positional_embedding=positional_embedding)
    params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
    tokens = jax.random.randint(jax.random.key(2), (3, 8), 0, 11)
    kv = [f"blocks.{layer}.attn.hook_{x}" for layer in range(2) for x in "kv"]
    pattern = "blocks.1.attn.hook_pattern"
    logits, cache = apply(params, tokens, cfg, cache=kv + [pattern])
    past = [(cache[f"blocks.{layer}.attn.hook_k"][:, :5], cache[f"blocks.{layer}.attn.hook_v"][:, :5]) for layer in range(2)]
    for fast in (True, False):
        rest, rest_cache = apply(params, tokens[:, 5:], cfg, cache=[pattern], past=past, fast=fast)
        np.testing.assert_allclose(rest, logits[:, 5:], atol=1e-5)
        assert rest_cache[pattern].shape == (3, 2, 3, 8)  # the new queries over every key
        np.testing.assert_allclose(rest_cache[pattern], cache[pattern][:, :, 5:], atol=1e-6)
    labels = (tokens[:, 6:] + 1) % 11  # any labels, for the new positions from the second on
    loss, _ = label_loss(params, tokens[:, 5:], labels, cfg, past=past, logit_positions=slice(1, None))
    expected = jax.nn.logsumexp(logits[:, 6:], -1) - jnp.take_along_axis(logits[:, 6:], labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="sequence length 10 exceeds model.n_ctx=9"):
        apply(params, tokens[:, :5], cfg, past=past)
    with pytest.raises(ConfigError, match="past gives keys and values for 1 of the model's 2 layers"):
        apply(params, tokens[:, 5:], cfg, past=past[:1])
