"""A fine-tune against its base: how far each component moved, and which components carry the change in
loss. Pure measures of one fine-tuned model, with its base's params as data (`{"base": params}`, per
member: `analyze(traj, measures, {}, per_member={"base": base [member, ...]})`).

Component change, the relative Frobenius norm ||X - X_base|| / ||X_base|| of

    W_QK = W_Q W_K^T   [head, d_model, d_model]   each head's               -> change_W_QK [layer, head]
    W_OV = W_V W_O     [head, d_model, d_model]   each head's               -> change_W_OV [layer, head]
    W_E, W_pos, W_U                                                          -> change_W_E, ... []
    W_in, W_out        each layer's MLP (a model with MLPs)                  -> change_W_in, change_W_out [layer]

(params of another layout, a toy model's: every leaf's own relative change, change_{leaf} []).

Patching from the base into the fine-tuned model, on fixed evaluation tokens of the fine-tuning task:
with L_b, L_f the base's and fine-tuned model's loss, and L_c the fine-tuned model's with component c's
activation replaced by the base's (same tokens),

    patch_c = (L_c - L_f) / (L_b - L_f)       the fraction of the fine-tune's loss change that c undoes

1: c alone gives back the base's loss, 0: it does nothing. Components: each head's output
(`hook_result`, z W_O: the base's head output, not only its z) [layer, head], each attention layer's
output (`hook_attn_out`, b_O included) [layer], each MLP's output [layer], the embeddings
(`hook_embed` + `hook_pos_embed`) [], and every one of these at once (`patch_all` []: the residual
stream then is the base's, so what is left is the change of ln_final and the unembedding). At the
first checkpoint L_b = L_f: nothing to undo, the fractions are nan, as they are wherever |L_b - L_f| is
within `NOISE` of the losses (rounding, not a change).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.models import transformer as tfm
from mi_jax.models.ops import cross_entropy
from mi_jax.trees import flatten

NOISE = 1e-5  # a loss change within this fraction of the losses is float32 rounding: nothing to undo (nan)
QK, OV = "hme,hne->hmn", "hme,hen->hmn"  # W_Q W_K^T and W_V W_O of each head


def relative_change(x: jax.Array, base: jax.Array, axes=None, diff: jax.Array | None = None) -> jax.Array:
    """||x - base||_F / ||base||_F over `axes` (default all): 0 where both are 0, inf where only base is.
    `diff`: x - base, when computed better than by subtracting (`bilinear_change`)."""
    diff = jnp.sqrt(jnp.sum(jnp.square(x - base if diff is None else diff), axis=axes))
    norm = jnp.sqrt(jnp.sum(jnp.square(base), axis=axes))
    return jnp.where(norm > 0, diff / jnp.where(norm > 0, norm, 1.0), jnp.where(diff > 0, jnp.inf, 0.0))


def bilinear_change(a, b, a_base, b_base, spec: str) -> jax.Array:
    """Each head's relative change of the product einsum(spec, a, b) from the base's: [head]. The difference is
    (a - a_base) b + a_base (b - b_base), exactly 0 for unchanged factors (a difference of the two products
    is not: each is rounded its own way), and with none of their cancellation."""
    product = lambda x, y: jnp.einsum(spec, x, y)  # noqa: E731
    diff = product(a - a_base, b) + product(a_base, b - b_base)
    return relative_change(None, product(a_base, b_base), (1, 2), diff)


def w_qk(attn: dict) -> jax.Array:
    """Each head's bilinear query-key form W_Q W_K^T: [head, d_model, d_model]."""
    return jnp.einsum(QK, attn["W_Q"], attn["W_K"])


def w_ov(attn: dict) -> jax.Array:
    """Each head's output-value map W_V W_O: [head, d_model, d_model]."""
    return jnp.einsum(OV, attn["W_V"], attn["W_O"])


def blocks(params: dict) -> list[dict]:
    """A transformer's blocks in layer order (a dict keyed by layer, as loaded, or a list)."""
    b = params["blocks"]
    return [b[k] for k in sorted(b)] if isinstance(b, dict) else list(b)


def is_transformer(params: dict) -> bool:
    return isinstance(params, dict) and "blocks" in params and "W_E" in params


def component_change(params: dict, data: dict) -> dict[str, jax.Array]:
    """Each component's relative change from `data["base"]` (module docstring): {"change_W_QK": [layer, head],
    "change_W_OV": [layer, head], "change_W_E": [], "change_W_pos": [], "change_W_U": [], "change_W_in": [layer],
    "change_W_out": [layer]} (those the model has); a toy model's: {"change_{leaf}": []}."""
    base = data["base"]
    if not is_transformer(params):
        theirs = flatten(base)
        return {f"change_{name}": relative_change(x, theirs[name]) for name, x in flatten(params).items()}
    pairs = list(zip(blocks(params), blocks(base)))  # (fine-tuned, base) of each layer
    heads = lambda x, y, spec: jnp.stack([bilinear_change(a["attn"][x], a["attn"][y], b["attn"][x], b["attn"][y], spec)  # noqa: E731
                                          for a, b in pairs])
    out = {"change_W_QK": heads("W_Q", "W_K", QK), "change_W_OV": heads("W_V", "W_O", OV)}
    for name in ("W_E", "W_pos", "W_U"):
        if name in params:
            out[f"change_{name}"] = relative_change(params[name], base[name])
    if "mlp" in pairs[0][0]:
        for name in ("W_in", "W_out"):
            out[f"change_{name}"] = jnp.stack([relative_change(a["mlp"][name], b["mlp"][name]) for a, b in pairs])
    return out


# ----------------------------------------------------------------------------- patching base -> fine-tuned


class EvalSet(NamedTuple):
    """Fixed tokens [batch, pos] of a task and its loss of a run's logits [batch, pos, vocab_out] -> []."""

    tokens: np.ndarray
    loss: Callable[[jax.Array], jax.Array]


def eval_set(task, max_examples: int | None = 1024) -> EvalSet | None:
    """The fine-tuning task's evaluation data as patching takes it (the first `max_examples` examples):
    grokking's test pairs (its train pairs when it has no test split), scored at `=`; induction's and a
    language run's evaluation batch, scored on every next token. None for a kind without a transformer
    or not listed here. (The config's own split, for every member of a sweep over train_frac; the models
    run without the config's training interventions.)"""
    kind = getattr(type(task.cfg), "kind", None)
    cut = slice(None, max_examples)
    if kind == "grokking":
        from mi_jax.tasks.grokking import label_nll

        split = "test" if len(task.test_labels) else "train"
        tokens, labels = getattr(task, f"{split}_tokens"), getattr(task, f"{split}_labels")
        labels, p = jnp.asarray(labels[cut]), task.cfg.p
        return EvalSet(np.asarray(tokens[cut]), lambda logits: label_nll(logits[:, -1, :p], labels).mean())
    if kind == "induction":
        from mi_jax.tasks.induction import per_token_loss

        tokens = np.asarray(task.eval_tokens[cut])
        return EvalSet(tokens, lambda logits: per_token_loss(logits, jnp.asarray(tokens)).mean())
    if kind == "language":
        windows = np.asarray(task.eval_tokens[cut])  # [batch, seq_len + 1]: inputs, then each input's next token
        return EvalSet(windows[:, :-1], lambda logits: cross_entropy(logits, jnp.asarray(windows[:, 1:])).mean())
    return None


def site_names(cfg: tfm.TransformerConfig) -> dict[str, list[str]]:
    """The hook points patched per site: {"head": [hook_result per layer], "attn": [hook_attn_out per layer],
    "mlp": [hook_mlp_out per layer] (a model with MLPs), "embed": [hook_embed (, hook_pos_embed)]}."""
    layers = range(cfg.n_layers)
    names = {"head": [f"blocks.{l}.attn.hook_result" for l in layers],
             "attn": [f"blocks.{l}.hook_attn_out" for l in layers]}
    if cfg.d_mlp is not None:
        names["mlp"] = [f"blocks.{l}.hook_mlp_out" for l in layers]
    names["embed"] = ["hook_embed"] + (["hook_pos_embed"] if cfg.positional_embedding != "none" else [])
    return names


def patching_measure(cfg: tfm.TransformerConfig, tokens, loss: Callable[[jax.Array], jax.Array],
                     batch_size: int | None = None):
    """Patching from the base (`data["base"]`) into the fine-tuned model on `tokens` [batch, pos], scored by
    `loss(logits) -> []` (module docstring) -> fn(params, data) -> {"patch_head": [layer, head],
    "patch_attn": [layer], "patch_mlp": [layer] (with MLPs), "patch_embed": [], "patch_all": [],
    "loss_base": [], "loss_finetuned": [], "loss_all_patched": []}. Each site's components are one vmap,
    or with `batch_size` a `lax.map` of that many at a time (bounding the memory of many heads)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    names = site_names(cfg)
    cached = [n for site in names.values() for n in site]
    over = (lambda fn, xs: jax.vmap(fn)(xs)) if batch_size is None else (  # noqa: E731
        lambda fn, xs: jax.lax.map(fn, xs, batch_size=batch_size))

    def measure(params, data):
        base_logits, cache = tfm.apply(data["base"], tokens, cfg, cache=cached)
        l_base, l_ft = loss(base_logits), loss(tfm.apply(params, tokens, cfg, cache=cached)[0])  # the same code path
        change = l_base - l_ft
        nothing = jnp.abs(change) <= NOISE * jnp.maximum(jnp.abs(l_base), jnp.abs(l_ft))
        frac = lambda l: jnp.where(nothing, jnp.nan, (l - l_ft) / jnp.where(nothing, 1.0, change))  # noqa: E731

        def run(hooks):  # the fine-tuned model's loss with `hooks` in place
            return loss(tfm.apply(params, tokens, cfg, hooks=hooks)[0])

        def base_where(name, mask):  # a hook: the base's activation where `mask(x)` holds
            return lambda x: jnp.where(mask(x), cache[name], x)

        def one_head(index):  # index [2]: (layer, head); hook_result is [batch, pos, head, d_model]
            at = lambda layer: lambda x: (index[0] == layer) & (jnp.arange(x.shape[2]) == index[1])[:, None]  # noqa: E731
            return run({name: base_where(name, at(layer)) for layer, name in enumerate(names["head"])})

        def one_layer(site):  # -> fn(layer index) patching that layer's output of `site`
            at = lambda layer, index: lambda x: index == layer  # noqa: E731
            return lambda index: run({name: base_where(name, at(l, index)) for l, name in enumerate(names[site])})

        every = lambda sites: {n: base_where(n, lambda x: True) for s in sites for n in names.get(s, [])}  # noqa: E731
        layers = jnp.arange(cfg.n_layers)
        heads = jnp.asarray([(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)], jnp.int32)
        l_all = run(every(("attn", "mlp", "embed")))
        out = {
            "patch_head": frac(over(one_head, heads)).reshape(cfg.n_layers, cfg.n_heads),
            "patch_attn": frac(over(one_layer("attn"), layers)),
            "patch_embed": frac(run(every(("embed",)))),
            "patch_all": frac(l_all),
            "loss_base": l_base, "loss_finetuned": l_ft, "loss_all_patched": l_all,
        }
        if "mlp" in names:
            out["patch_mlp"] = frac(over(one_layer("mlp"), layers))
        return out

    return measure


def measures(task, max_examples: int | None = 1024, batch_size: int | None = None) -> dict:
    """The fine-tune measures of a task's run: component change always, patching where the task has a
    transformer and an evaluation set (`eval_set`; `batch_size`: see `patching_measure`)."""
    out = {"change": component_change}
    data = eval_set(task, max_examples)
    if data is not None:
        out["patching"] = patching_measure(task.cfg.transformer, data.tokens, data.loss, batch_size)
    return out
