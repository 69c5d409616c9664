"""Crosscoders across checkpoints and feature lineages across per-checkpoint SAEs (issue 23, items 2-3).

An acausal crosscoder (Lindsey et al. 2024) over T checkpoints: one dictionary of d_sae latents that reads
from and writes to the activations of every checkpoint. The same inputs run through each checkpoint give
x [batch, T, d_in]:

    pre  = sum_t (x_t - b_dec_t) @ W_enc[t] + b_enc          W_enc [T, d_in, d_sae], b_enc [d_sae]
    f    = sparsify(pre)                                       [batch, d_sae]
    x^_t = f @ W_dec[:, t] + b_dec_t                           W_dec [d_sae, T, d_in], b_dec [T, d_in]

Architectures (`CrosscoderConfig.architecture`):

    topk   f = ReLU(TopK_k(pre)) (sae's TopK); loss = sum_t ||x_t - x^_t||^2 (+ sae's auxiliary-k loss on
           the concatenated residual). After every Adam step each latent's decoder is renormalised to unit
           norm over all checkpoints jointly, so the per-checkpoint norms stay free to differ.
    relu   f = ReLU(pre); loss = sum_t ||x_t - x^_t||^2 + l1 * sum_i f_i sum_t ||W_dec[i, t]||
           (the L1 penalty weighted by the sum over checkpoints of the decoder norms, Lindsey et al. 2024:
           a latent pays for every checkpoint it writes to, so a feature absent at a checkpoint gets a
           zero decoder there).

`decoder_norms(params)` [d_sae, T] says when each latent's feature exists (births, deaths, rotations over
training); `births(norms)` gives the first checkpoint where it does, to sort a heat map by birth.

Feature lineages across per-checkpoint SAEs: `decoder_similarity` (cosine of decoder rows),
`match_features` (Hungarian matching, scipy's linear_sum_assignment, maximising total cosine similarity)
and `lineages` (each feature of checkpoint 0 followed forward through the matches of neighbouring
checkpoints).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mi_jax.analysis.sae import DictionaryConfig, aux_loss, top_mask
from mi_jax.config import check

EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class CrosscoderConfig(DictionaryConfig):
    """A crosscoder's settings: one dictionary of d_sae latents for every checkpoint, TopK or ReLU."""

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("topk", "relu")
    WHAT: ClassVar[str] = "crosscoder"

    @property
    def unit_decoder(self) -> bool:
        return self.architecture == "topk"


# ---------------------------------------------------------------------------------------------- inputs


def check_checkpoint_shapes(shapes: Sequence[tuple]) -> None:
    """One-line ConfigError unless every checkpoint's activations have the same shape."""
    shapes = [tuple(s) for s in shapes]
    check(len(shapes) > 0, "a crosscoder needs at least one checkpoint")
    for t, s in enumerate(shapes):
        check(s == shapes[0],
              f"a crosscoder needs the same activation shape at every checkpoint: checkpoint 0 gives "
              f"{shapes[0]}, checkpoint {t} gives {s}; choose a hook point of one width across the series")


def stack_checkpoints(xs) -> jax.Array:
    """[batch, T, d_in] from a list of per-checkpoint activations [batch, d_in] (shapes checked), or an
    array that already is [batch, T, d_in]."""
    if isinstance(xs, (list, tuple)):
        check_checkpoint_shapes([jnp.shape(x) for x in xs])
        xs = jnp.stack(xs, axis=1)
    check(jnp.ndim(xs) == 3,
          f"crosscoder activations must be [batch, checkpoint, d_in], got shape {tuple(jnp.shape(xs))}")
    return xs


def stacked_activations(activation_fns: Sequence[Callable]) -> Callable:
    """activations_fn(key, step) -> [batch, T, d_in] from one activations_fn(key, step) -> [batch, d_in] per
    checkpoint; every checkpoint gets the same key (the same inputs). Shapes are checked up front."""
    fns = list(activation_fns)
    check(len(fns) > 0, "a crosscoder needs at least one checkpoint")
    key, step = jax.random.key(0), jnp.asarray(0)
    check_checkpoint_shapes([jax.eval_shape(fn, key, step).shape for fn in fns])
    return lambda kk, s: jnp.stack([fn(kk, s) for fn in fns], axis=1)


# ---------------------------------------------------------------------------------------------- model


def init_crosscoder(cfg: CrosscoderConfig, n_checkpoints: int, d_in: int, key: jax.Array,
                    sample: jax.Array | None = None) -> dict:
    """{W_enc [T, d_in, d_sae], b_enc [d_sae], W_dec [d_sae, T, d_in], b_dec [T, d_in]}.

    Decoder: random directions over all checkpoints jointly (unit norm for topk, 0.1 for relu), the
    encoder their transpose, b_enc 0, b_dec the mean of `sample` [batch, T, d_in] when given (else 0)."""
    W_dec = jax.random.normal(key, (cfg.d_sae, n_checkpoints, d_in), jnp.float32)
    W_dec = W_dec / jnp.linalg.norm(W_dec.reshape(cfg.d_sae, -1), axis=1)[:, None, None]
    if not cfg.unit_decoder:
        W_dec = 0.1 * W_dec
    b_dec = (jnp.zeros((n_checkpoints, d_in), jnp.float32) if sample is None
             else jnp.asarray(sample, jnp.float32).mean(0))
    return {"W_enc": W_dec.transpose(1, 2, 0), "b_enc": jnp.zeros(cfg.d_sae, jnp.float32),
            "W_dec": W_dec, "b_dec": b_dec}


def pre_activations(params: dict, x: jax.Array) -> jax.Array:
    """[batch, d_sae]: the encoder summed over checkpoints."""
    return jnp.einsum("btd,tds->bs", x - params["b_dec"], params["W_enc"]) + params["b_enc"]


def encode(cfg: CrosscoderConfig, params: dict, x: jax.Array) -> jax.Array:
    """Latents f [batch, d_sae] of x [batch, T, d_in]."""
    pre = pre_activations(params, x)
    if cfg.architecture == "relu":
        return jax.nn.relu(pre)
    return jax.nn.relu(pre) * top_mask(pre, cfg.k)


def decode(params: dict, f: jax.Array) -> jax.Array:
    """[batch, T, d_in]: each checkpoint's reconstruction."""
    return jnp.einsum("bs,std->btd", f, params["W_dec"]) + params["b_dec"]


def decoder_norms(params: dict) -> jax.Array:
    """[d_sae, T]: each latent's decoder norm at each checkpoint (when its feature exists)."""
    return jnp.linalg.norm(params["W_dec"], axis=-1)


def crosscoder_loss(cfg: CrosscoderConfig, params: dict, x: jax.Array, dead: jax.Array):
    """(loss, (f, mse)) on one batch x [batch, T, d_in]; `dead` [d_sae] marks dead latents (topk aux loss)."""
    pre = pre_activations(params, x)
    f = encode(cfg, params, x)
    residual = x - decode(params, f)
    mse = (residual**2).sum((-2, -1)).mean()
    if cfg.architecture == "relu":
        weight = decoder_norms(params).sum(-1)  # [d_sae]: summed over checkpoints
        return mse + cfg.l1_coefficient * (f * weight).sum(-1).mean(), (f, mse)
    if cfg.aux_coefficient > 0:  # sae's auxiliary-k loss on the concatenated checkpoints
        flat = {"W_dec": params["W_dec"].reshape(cfg.d_sae, -1)}
        aux = aux_loss(cfg, flat, pre, residual.reshape(x.shape[0], -1), dead)
        return mse + cfg.aux_coefficient * aux, (f, mse)
    return mse, (f, mse)


def _normalise_decoder(params: dict) -> dict:
    W = params["W_dec"]
    norm = jnp.linalg.norm(W.reshape(W.shape[0], -1), axis=1)[:, None, None]
    return {**params, "W_dec": W / jnp.maximum(norm, EPS)}


# ---------------------------------------------------------------------------------------------- training


def train_crosscoder(cfg: CrosscoderConfig, activations_fn: Callable, key: jax.Array) -> tuple[dict, dict]:
    """Train one crosscoder with Adam in a `lax.scan` over cfg.steps; returns (params, metrics).

    activations_fn(key, step) -> [batch_size, T, d_in] (or a list of T per-checkpoint [batch_size, d_in],
    shapes checked; see also `stacked_activations`) draws each step's batch on the fly. Jittable and
    vmappable. Metrics on a fixed evaluation set (cfg.eval_batches draws with a key of their own):
    mse_per_checkpoint [T] (per element), fve_per_checkpoint [T], mse, fve (all checkpoints together),
    l0, dead (latents never active over the evaluation set), dead_train (inactive for the last
    dead_after steps), loss (the last step's training loss).
    """
    acts = lambda kk, s: stack_checkpoints(activations_fn(kk, s))
    init_key, data_key, eval_key = jax.random.split(key, 3)
    first = acts(jax.random.fold_in(data_key, 0), jnp.asarray(0))
    _, n_checkpoints, d_in = first.shape
    params = init_crosscoder(cfg, n_checkpoints, d_in, init_key, sample=first)
    opt = optax.adam(cfg.lr)
    grad_fn = jax.value_and_grad(lambda p, x, dead: crosscoder_loss(cfg, p, x, dead), has_aux=True)

    def step(carry, i):
        p, opt_state, idle = carry
        x = acts(jax.random.fold_in(data_key, i), i)
        (loss, (f, _)), grads = grad_fn(p, x, idle >= cfg.dead_after)
        updates, opt_state = opt.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        if cfg.unit_decoder:
            p = _normalise_decoder(p)
        idle = jnp.where((f > 0).any(0), 0, idle + 1)
        return (p, opt_state, idle), loss

    carry = (params, opt.init(params), jnp.zeros(cfg.d_sae, jnp.int32))
    (params, _, idle), losses = jax.lax.scan(step, carry, jnp.arange(cfg.steps))

    eval_keys = jax.random.split(eval_key, cfg.eval_batches)
    x = jax.vmap(lambda kk: acts(kk, jnp.asarray(cfg.steps)))(eval_keys)
    metrics = evaluate_crosscoder(cfg, params, x.reshape(-1, *x.shape[2:]))
    metrics["dead_train"] = (idle >= cfg.dead_after).sum()
    metrics["loss"] = losses[-1]
    return params, metrics


def evaluate_crosscoder(cfg: CrosscoderConfig, params: dict, x: jax.Array) -> dict:
    """{mse_per_checkpoint [T], fve_per_checkpoint [T], mse, fve, l0, dead} on x [n, T, d_in]."""
    f = encode(cfg, params, x)
    err = x - decode(params, f)
    sse_t = (err**2).sum((0, 2))
    sst_t = ((x - x.mean(0)) ** 2).sum((0, 2))
    return {"mse_per_checkpoint": (err**2).mean((0, 2)),
            "fve_per_checkpoint": 1.0 - sse_t / jnp.maximum(sst_t, EPS),
            "mse": (err**2).mean(), "fve": 1.0 - sse_t.sum() / jnp.maximum(sst_t.sum(), EPS),
            "l0": (f > 0).sum(-1).mean(), "dead": (~(f > 0).any(0)).sum()}


# ---------------------------------------------------------------------------------------------- births


def births(norms, threshold: float = 0.1) -> np.ndarray:
    """[d_sae] int: each latent's first checkpoint whose decoder norm exceeds `threshold` x its max over
    checkpoints; -1 for a latent whose decoder is zero everywhere. `norms` [d_sae, T] (`decoder_norms`)."""
    norms = np.asarray(norms, dtype=np.float64)
    peak = norms.max(axis=1, keepdims=True)
    alive = norms > threshold * peak
    alive &= peak > 0
    return np.where(alive.any(axis=1), alive.argmax(axis=1), -1)


def birth_order(norms, threshold: float = 0.1) -> np.ndarray:
    """[d_sae] latent order for a heat map: by birth, then by the checkpoint of peak norm; never-born last."""
    norms = np.asarray(norms, dtype=np.float64)
    b = births(norms, threshold)
    b = np.where(b < 0, norms.shape[1], b)
    return np.lexsort((norms.argmax(axis=1), b))


# ---------------------------------------------------------------------------------------------- lineages


def decoder_similarity(dec_a, dec_b) -> np.ndarray:
    """[d_a, d_b] cosine similarities between decoder rows dec_a [d_a, d_in] and dec_b [d_b, d_in]."""
    a, b = np.asarray(dec_a, np.float64), np.asarray(dec_b, np.float64)
    check(a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1],
          f"decoders must be [d_sae, d_in] of one d_in, got shapes {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), EPS)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), EPS)
    return a @ b.T


def match_features(dec_a, dec_b) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of dec_a's features to dec_b's, maximising the total cosine similarity.

    Returns (perm [d_a] int: the row of dec_b matched to each row of dec_a, -1 when d_a > d_b leaves it
    unmatched; similarity [d_a]: the matched cosine similarity, nan when unmatched)."""
    from scipy.optimize import linear_sum_assignment

    sim = decoder_similarity(dec_a, dec_b)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    perm = np.full(sim.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    similarity = np.full(sim.shape[0], np.nan)
    similarity[rows] = sim[rows, cols]
    return perm, similarity


def lineages(decoders) -> tuple[np.ndarray, np.ndarray]:
    """Follow each feature of checkpoint 0 forward through the matches of neighbouring checkpoints.

    decoders [T, d_sae, d_in] (per-checkpoint SAE decoders, e.g. a vmapped train_sae's W_dec).
    Returns (index [T, d_sae]: index[t, i] is the feature of checkpoint t on lineage i (index[0] = i),
    similarity [T-1, d_sae]: the cosine similarity of the step t -> t+1 on each lineage)."""
    decoders = np.asarray(decoders)
    check(decoders.ndim == 3, f"decoders must be [checkpoint, d_sae, d_in], got shape {decoders.shape}")
    T, d_sae, _ = decoders.shape
    index = np.empty((T, d_sae), dtype=np.int64)
    index[0] = np.arange(d_sae)
    similarity = np.empty((max(T - 1, 0), d_sae))
    for t in range(T - 1):
        perm, sim = match_features(decoders[t], decoders[t + 1])
        index[t + 1] = perm[index[t]]
        similarity[t] = sim[index[t]]
    return index, similarity
