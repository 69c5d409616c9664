"""A hooked transformer: Flax NNX for construction, a pure function for the forward pass.

Axis names used throughout (shapes are written with them):
    batch, pos (query position), key_pos, head, d_head, d_model, d_mlp, vocab, vocab_out.

Weights follow the interpretability papers' (and TransformerLens's) conventions, so
analysis code can read them as written there. `params` is a plain nested dict:

    W_E   [vocab, d_model]          W_pos [n_ctx, d_model]
    blocks[l]["attn"]:
        W_Q, W_K, W_V [head, d_model, d_head]     b_Q, b_K, b_V [head, d_head]
        W_O [head, d_head, d_model]               b_O [d_model]
    blocks[l]["mlp"]:  W_in [d_model, d_mlp]  b_in [d_mlp]  W_out [d_mlp, d_model]  b_out [d_model]
    blocks[l]["ln1"], ["ln2"], params["ln_final"]: w, b [d_model]   (only with layer_norm)
    W_U [d_model, vocab_out]  b_U [vocab_out]

Residual stream writes are row vectors: `resid @ W`. `blocks` is a dict keyed by
layer index (what `nnx.State.to_pure_dict()` gives for an `nnx.List`).

Hook points (TransformerLens vocabulary), all `[batch, pos, ...]`:
    hook_embed, hook_pos_embed,
    blocks.{l}.hook_resid_pre, blocks.{l}.ln1.hook_normalized,
    blocks.{l}.attn.hook_q / hook_k / hook_v   [batch, pos, head, d_head]
    blocks.{l}.attn.hook_attn_scores / hook_pattern   [batch, head, pos, key_pos]
    blocks.{l}.attn.hook_z                      [batch, pos, head, d_head]
    blocks.{l}.attn.hook_result                 [batch, pos, head, d_model]  (per-head output)
    blocks.{l}.hook_attn_out, blocks.{l}.hook_resid_mid, blocks.{l}.ln2.hook_normalized,
    blocks.{l}.mlp.hook_pre / hook_post         [batch, pos, d_mlp]
    blocks.{l}.hook_mlp_out, blocks.{l}.hook_resid_post, ln_final.hook_normalized, logits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from mi_jax.config import check, check_name
from mi_jax.models import fast as fast_paths
from mi_jax.models.ops import ACTIVATIONS, causal_mask, cross_entropy, dense, unembedded_cross_entropy

ActFn = Literal["relu", "gelu", "silu"]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape of a hooked transformer. `d_mlp=None` makes it attention-only.

    `d_vocab`, `d_vocab_out` and `n_ctx` left as None are filled in from the task.
    `init_std=None` uses 0.8 / sqrt(d_model) for every weight (biases start at 0).
    `positional_embedding`: "learned" adds W_pos to the residual stream; "shortformer" (as
    TransformerLens's) adds it to each layer's query and key inputs only, after ln1, so values and
    MLPs never see positions (TL's toy attention-only LMs use it: it eases induction heads); "none".
    """

    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None  # None: d_model // n_heads
    d_mlp: int | None = 512
    act_fn: ActFn = "relu"
    layer_norm: bool = False
    n_ctx: int | None = None
    d_vocab: int | None = None
    d_vocab_out: int | None = None
    positional_embedding: Literal["learned", "shortformer", "none"] = "learned"
    init_std: float | None = None

    def __post_init__(self):
        check(self.n_layers >= 1, f"model.n_layers must be >= 1, got {self.n_layers}")
        check(self.d_model >= 1 and self.n_heads >= 1, "model.d_model and model.n_heads must be >= 1")
        check(
            self.d_model % self.n_heads == 0,
            f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}",
        )
        if self.d_head is None:
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        check(self.d_head >= 1, f"model.d_head must be >= 1, got {self.d_head}")
        check(self.d_mlp is None or self.d_mlp >= 1, f"model.d_mlp must be >= 1 or None, got {self.d_mlp}")
        check(self.positional_embedding in ("learned", "shortformer", "none"),
              f"model.positional_embedding must be learned, shortformer or none, got {self.positional_embedding!r}")
        check(self.act_fn in ACTIVATIONS, f"model.act_fn must be one of {sorted(ACTIVATIONS)}, got {self.act_fn!r}")
        for name in ("n_ctx", "d_vocab", "d_vocab_out"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"model.{name} must be >= 1, got {value}")
        if self.d_vocab is not None and self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)

    @property
    def std(self) -> float:
        return self.init_std if self.init_std is not None else 0.8 / math.sqrt(self.d_model)

    def require_complete(self) -> None:
        for name in ("n_ctx", "d_vocab", "d_vocab_out"):
            check(getattr(self, name) is not None, f"model.{name} is not set (the task should set it)")


# ----------------------------------------------------------------------------- construction


class _Attention(nnx.Module):
    def __init__(self, cfg: TransformerConfig, init, rngs: nnx.Rngs):
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nnx.Param(init(rngs.params(), (h, d, dh)))
        self.W_K = nnx.Param(init(rngs.params(), (h, d, dh)))
        self.W_V = nnx.Param(init(rngs.params(), (h, d, dh)))
        self.W_O = nnx.Param(init(rngs.params(), (h, dh, d)))
        self.b_Q = nnx.Param(jnp.zeros((h, dh)))
        self.b_K = nnx.Param(jnp.zeros((h, dh)))
        self.b_V = nnx.Param(jnp.zeros((h, dh)))
        self.b_O = nnx.Param(jnp.zeros((d,)))


class _MLP(nnx.Module):
    def __init__(self, cfg: TransformerConfig, init, rngs: nnx.Rngs):
        self.W_in = nnx.Param(init(rngs.params(), (cfg.d_model, cfg.d_mlp)))
        self.b_in = nnx.Param(jnp.zeros((cfg.d_mlp,)))
        self.W_out = nnx.Param(init(rngs.params(), (cfg.d_mlp, cfg.d_model)))
        self.b_out = nnx.Param(jnp.zeros((cfg.d_model,)))


class _LayerNorm(nnx.Module):
    def __init__(self, d_model: int):
        self.w = nnx.Param(jnp.ones((d_model,)))
        self.b = nnx.Param(jnp.zeros((d_model,)))


class _Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, init, rngs: nnx.Rngs):
        self.attn = _Attention(cfg, init, rngs)
        if cfg.d_mlp is not None:
            self.mlp = _MLP(cfg, init, rngs)
        if cfg.layer_norm:
            self.ln1 = _LayerNorm(cfg.d_model)
            if cfg.d_mlp is not None:
                self.ln2 = _LayerNorm(cfg.d_model)


class HookedTransformer(nnx.Module):
    """The parameters of a transformer as an NNX module.

    Use `nnx.split(model)` (or `init_params`) to get plain pytrees and `apply` to run it.
    Calling the module runs `apply` on its own parameters.
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        cfg.require_complete()
        self.cfg = cfg
        init = nnx.initializers.normal(cfg.std)
        self.W_E = nnx.Param(init(rngs.params(), (cfg.d_vocab, cfg.d_model)))
        if cfg.positional_embedding != "none":
            self.W_pos = nnx.Param(init(rngs.params(), (cfg.n_ctx, cfg.d_model)))
        self.blocks = nnx.List([_Block(cfg, init, rngs) for _ in range(cfg.n_layers)])
        if cfg.layer_norm:
            self.ln_final = _LayerNorm(cfg.d_model)
        self.W_U = nnx.Param(init(rngs.params(), (cfg.d_model, cfg.d_vocab_out)))
        self.b_U = nnx.Param(jnp.zeros((cfg.d_vocab_out,)))

    def __call__(self, tokens, **kwargs):
        params = nnx.to_pure_dict(nnx.state(self, nnx.Param))
        return apply(params, tokens, self.cfg, **kwargs)


def init_params(cfg: TransformerConfig, key: jax.Array) -> dict:
    """Fresh parameters as a plain nested dict (pure: same key, same params; vmappable)."""
    model = HookedTransformer(cfg, rngs=nnx.Rngs(params=key))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def is_bias(path: tuple) -> bool:
    """True for bias and layer-norm offset leaves (names b_*, or `b` of a layer norm)."""
    last = path[-1]
    name = str(getattr(last, "key", getattr(last, "name", last)))
    return name.startswith("b_") or name == "b"


# ----------------------------------------------------------------------------- forward pass


ALL = "all"


class _Hooks:
    """Applies user hooks and records the cached activations during one forward pass."""

    def __init__(self, cache: Iterable[str] | str, hooks: dict[str, Callable] | None):
        self.cache_all = cache == ALL
        self.wanted = set() if self.cache_all else set(cache)
        self.hooks = dict(hooks or {})
        self.seen: set[str] = set()
        self.cache: dict[str, jax.Array] = {}

    def wants(self, name: str) -> bool:
        return self.cache_all or name in self.wanted or name in self.hooks

    def edits(self, name: str) -> bool:
        """Whether a user hook may change this activation (not only cache it)."""
        return name in self.hooks

    @property
    def active(self) -> bool:
        """Whether anything is hooked or cached at all."""
        return bool(self.cache_all or self.wanted or self.hooks)

    def __call__(self, name: str, value: jax.Array) -> jax.Array:
        self.seen.add(name)
        if name in self.hooks:
            new = self.hooks[name](value)
            if new is not None:
                check(
                    new.shape == value.shape,
                    f"hook on {name} returned shape {new.shape}, expected {value.shape}",
                )
                value = new
        if self.cache_all or name in self.wanted:
            self.cache[name] = value
        return value

    def finish(self, cfg: "TransformerConfig") -> dict[str, jax.Array]:
        unknown = sorted((self.wanted | set(self.hooks)) - self.seen)
        if unknown:  # the nearest valid name, from every hook point (this pass skips the unrequested ones)
            check_name(unknown[0], hook_names(cfg), "hook point", " for this model")
        return self.cache


def _layer_norm(x, ln):
    x = x - x.mean(-1, keepdims=True)
    scale = jnp.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
    return x / scale * ln["w"] + ln["b"]


def _attention(p, x_q, x_kv, *, causal: bool, hk: _Hooks, name: str, fast: bool, x_k=None, past=None):
    """Multi-head attention: x_q [batch, pos, d_model] queries, x_kv [batch, key_pos, d_model] keys and
    values (x_k: the keys' input where it differs from the values', as with shortformer positions;
    past: (k, v) [batch, n_past, head, d_head] of earlier positions, put before the keys and values)
    -> the attention output [batch, pos, d_model].

        q = x_q W_Q + b_Q,  k = x_k W_K + b_K,  v = x_kv W_V + b_V           [batch, pos, head, d_head]
        scores = q k^T / sqrt(d_head), future keys masked                   [batch, head, pos, key_pos]
        pattern = softmax(scores) over key_pos;  z = pattern v              [batch, pos, head, d_head]
        out = sum over heads of z W_O, + b_O

    `fast` computes the same with `fast`'s CPU paths where no hook needs what they skip.
    """
    project = fast_paths.project if fast else (lambda x, W, b: jnp.einsum("bpd,hde->bphe", x, W) + b)
    q = hk(f"{name}.hook_q", project(x_q, p["W_Q"], p["b_Q"]))
    k = hk(f"{name}.hook_k", project(x_kv if x_k is None else x_k, p["W_K"], p["b_K"]))
    v = hk(f"{name}.hook_v", project(x_kv, p["W_V"], p["b_V"]))
    if past is not None:
        k, v = (jnp.concatenate([before, now], axis=1) for before, now in zip(past, (k, v)))
    scores_name, pattern_name = f"{name}.hook_attn_scores", f"{name}.hook_pattern"
    if fast and q.shape[1] == 1 and not hk.active:
        return fast_paths.last_query_attention(p, q, k, v)
    if fast and (hk.wants(scores_name) or hk.edits(pattern_name)):
        z = fast_paths.attend_hooked(q, k, v, causal, lambda s: hk(scores_name, s), lambda a: hk(pattern_name, a))
    elif fast and hk.wants(pattern_name):  # cached only: in query blocks like `attend`
        z, pattern = fast_paths.attend_with_pattern(q, k, v, causal)
        hk(pattern_name, pattern)
    elif fast:
        z = fast_paths.attend(q, k, v, causal)
    else:
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        if causal:
            scores = jnp.where(causal_mask(*scores.shape[-2:]), scores, -jnp.inf)
        pattern = hk(pattern_name, jax.nn.softmax(hk(scores_name, scores), axis=-1))
        z = jnp.einsum("bhqk,bkhe->bqhe", pattern, v)
    z = hk(f"{name}.hook_z", z)
    if hk.wants(f"{name}.hook_result"):
        result = hk(f"{name}.hook_result", jnp.einsum("bqhe,hed->bqhd", z, p["W_O"]))
        return result.sum(2) + p["b_O"]
    return dense(z.reshape(*z.shape[:2], -1), p["W_O"].reshape(-1, p["W_O"].shape[-1])) + p["b_O"]


def apply(
    params: dict,
    tokens: jax.Array,
    cfg: TransformerConfig,
    *,
    cache: Iterable[str] | str = (),
    hooks: dict[str, Callable] | None = None,
    last_position_only: bool = False,
    logit_positions: slice | None = None,
    past: list | None = None,
    fast: bool = True,
):
    """Run the transformer. Pure: works under jit, vmap, scan and grad.

    tokens [batch, pos] int -> (logits [batch, pos, vocab_out], cache {name: activation}).
    `cache`: hook names to return (or `"all"`). `hooks`: {name: fn}, each activation is
    replaced by `fn(activation)` (a hook returning None leaves it unchanged).
    `last_position_only`: compute queries, MLP and unembedding of the *last layer* at the
    final position only (logits [batch, 1, vocab_out]); the training fast path for tasks
    scored at the last token. The earlier layers still run at every position.
    `logit_positions`: the final layer norm and the unembedding at these positions only (logits
    [batch, len(positions), vocab_out]): the rest of the model runs at every position; for measures
    that score a part of a sequence, the unembedding being the costly product at a large vocabulary.
    `past`: each layer's (k, v) [batch, n_past, head, d_head] for the positions before `tokens` (an earlier
    run's `attn.hook_k` / `hook_v`, its first n_past positions): the tokens continue that sequence at
    position n_past, their queries attending to those keys too (patterns [batch, head, pos, n_past + pos]);
    hooks and cache see the new positions only.
    `fast=False` runs the reference computation only (no `fast` CPU paths): the same values.
    """
    hk = _Hooks(cache, hooks)
    resid = _final_residual(params, tokens, cfg, hk, last_position_only, logit_positions, past, fast)
    return _unembed(params, resid, hk), hk.finish(cfg)


def label_loss(
    params: dict,
    tokens: jax.Array,
    labels: jax.Array,
    cfg: TransformerConfig,
    *,
    cache: Iterable[str] | str = (),
    hooks: dict[str, Callable] | None = None,
    logit_positions: slice | None = None,
    past: list | None = None,
    fast: bool = True,
):
    """The cross-entropy of `labels` under `apply`'s logits: tokens [batch, pos], labels [batch, n] for the
    n positions unembedded (all, or `logit_positions`) -> (loss [batch, n] float32, cache); `past` as `apply`'s.

    With `fast` and the logits neither hooked nor cached, the unembedding and the loss run together
    (`ops.unembedded_cross_entropy`: on CPU in blocks of rows, the logits never written whole).
    """
    hk = _Hooks(cache, hooks)
    resid = _final_residual(params, tokens, cfg, hk, False, logit_positions, past, fast)
    if fast and not hk.wants("logits"):
        loss = unembedded_cross_entropy(resid, params["W_U"], params["b_U"], labels)
    else:
        loss = cross_entropy(_unembed(params, resid, hk), labels)
    return loss, hk.finish(cfg)


def _unembed(params: dict, resid: jax.Array, hk: _Hooks) -> jax.Array:
    # float32 at least: a bfloat16 forward pass (train.compute_dtype) takes its log-softmax in float32
    return hk("logits", (dense(resid, params["W_U"]) + params["b_U"]).astype(jnp.promote_types(resid.dtype, jnp.float32)))


def _final_residual(params, tokens, cfg, hk, last_position_only, logit_positions, past, fast) -> jax.Array:
    """`apply` up to the unembedding: the residual stream after the final layer norm [batch, pos, d_model]
    (the last position or `logit_positions` only, where asked)."""
    check(
        not (last_position_only and hk.active),
        "last_position_only is a training fast path and takes no hooks or cache",
    )
    check(not (last_position_only and logit_positions is not None), "give last_position_only or logit_positions, not both")
    n_past, n_pos = (0 if past is None else past[0][0].shape[1]), tokens.shape[-1]
    check(past is None or len(past) == cfg.n_layers,
          f"past gives keys and values for {0 if past is None else len(past)} of the model's {cfg.n_layers} layers")
    check(n_past + n_pos <= cfg.n_ctx, f"sequence length {n_past + n_pos} exceeds model.n_ctx={cfg.n_ctx}")
    positions = slice(n_past, n_past + n_pos)
    act = ACTIVATIONS[cfg.act_fn]
    resid = hk("hook_embed", params["W_E"][tokens])
    shortformer = None
    if cfg.positional_embedding == "learned":
        resid = resid + hk("hook_pos_embed", params["W_pos"][positions])[None]
    elif cfg.positional_embedding == "shortformer":  # added to every layer's query and key inputs only
        shortformer = hk("hook_pos_embed", params["W_pos"][positions])[None]
    for layer in range(cfg.n_layers):
        p, name = params["blocks"][layer], f"blocks.{layer}"
        last = last_position_only and layer == cfg.n_layers - 1
        resid = hk(f"{name}.hook_resid_pre", resid)
        x = hk(f"{name}.ln1.hook_normalized", _layer_norm(resid, p["ln1"])) if cfg.layer_norm else resid
        if (fast and last and layer == 0 and not cfg.layer_norm and tokens.shape[0] > cfg.d_vocab
                and shortformer is None and past is None):
            attn_out, resid = fast_paths.first_layer_last_query(params, tokens)
        else:
            x_k = None if shortformer is None else x + shortformer
            x_q = x if x_k is None else x_k
            x_q = x_q[:, -1:] if last else x_q
            if last:  # the last position attends to every key: no mask needed
                resid = resid[:, -1:]
            attn_out = _attention(p["attn"], x_q, x, causal=not last, hk=hk, name=f"{name}.attn", fast=fast, x_k=x_k,
                                  past=None if past is None else past[layer])
        resid = resid + hk(f"{name}.hook_attn_out", attn_out)
        if cfg.d_mlp is not None:
            resid = hk(f"{name}.hook_resid_mid", resid)
            x = hk(f"{name}.ln2.hook_normalized", _layer_norm(resid, p["ln2"])) if cfg.layer_norm else resid
            m = p["mlp"]
            pre = hk(f"{name}.mlp.hook_pre", dense(x, m["W_in"]) + m["b_in"])
            post = hk(f"{name}.mlp.hook_post", act(pre))
            resid = resid + hk(f"{name}.hook_mlp_out", dense(post, m["W_out"]) + m["b_out"])
        resid = hk(f"{name}.hook_resid_post", resid)
    if logit_positions is not None:
        resid = resid[:, logit_positions]
    if cfg.layer_norm:
        resid = hk("ln_final.hook_normalized", _layer_norm(resid, params["ln_final"]))
    return resid


def hook_names(cfg: TransformerConfig) -> list[str]:
    """Every hook point of a model with this config, in forward order."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
    names: list[str] = []
    jax.eval_shape(lambda p: names.extend(apply(p, tokens, cfg, cache=ALL)[1]), abstract)
    return names
