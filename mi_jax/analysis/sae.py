"""Sparse autoencoders as a measure over the trajectory: pure, jittable, vmappable SAE training (jax + optax).

An SAE of activations x [batch, d_in] with a dictionary of d_sae latents:

    pre  = (x - b_dec) @ W_enc + b_enc            (the pre-encoder bias b_dec is subtracted)
    f    = sparsify(pre)                           [batch, d_sae]
    x^   = f @ W_dec + b_dec                       (W_dec [d_sae, d_in]: row i = latent i's direction)

Architectures (`SAEConfig.architecture`):

    relu       f = ReLU(pre); loss = ||x - x^||^2 + l1 * sum_i f_i ||W_dec_i||   (Anthropic, April 2024:
               the L1 penalty weighted by the decoder norms, the decoder left unconstrained)
    topk       f = ReLU(TopK_k(pre)): exactly the k largest pre-activations of each example are kept
               (Gao et al. 2024); loss = ||x - x^||^2 (+ the auxiliary-k loss)
    batchtopk  training: the k * batch largest ReLU(pre) over the whole batch are kept, so the mean L0 is k
               (Bussmann et al. 2024). Inference (`encode`, the metrics) uses a threshold theta, the running
               mean (EMA, 0.99) over training batches of the smallest activation kept: f = pre * (pre > theta),
               each example on its own (a JumpReLU). `encode(..., batch=True)` keeps the batch semantics.

For topk / batchtopk the decoder rows are renormalised to unit norm after every Adam step, and dead
latents are revived by the auxiliary-k loss of Gao et al. 2024: a latent not active for `dead_after`
steps is dead; the top `aux_k` dead pre-activations reconstruct the residual e = x - x^ (stop-gradient),
adding aux_coefficient * ||e - e^||^2 / ||e||^2 (per batch) to the loss.

`train_sae(cfg, activations_fn, key)` runs the whole training in one `lax.scan`; `activations_fn(key, step)`
draws a fresh batch [batch_size, d_in] on the fly (a checkpoint's own activations, no disk cache), so

    jax.vmap(lambda p, k: train_sae(cfg, lambda kk, s: acts(p, kk), k))(params_per_checkpoint, keys)

trains an SAE per checkpoint (x member) in one compiled program; `l1_coefficient=` and `k=` may be
traced arrays (a vmapped grid of sparsities; a traced k must be <= cfg.k, the static size of its `lax.top_k`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import optax

from mi_jax.config import check

EPS = 1e-12
AUX_K_MAX = 32  # the default aux_k's cap: its top_k over every latent costs more than the SAE's own step
THRESHOLD_DECAY = 0.99  # EMA of BatchTopK's smallest kept activation -> the inference threshold


@dataclasses.dataclass(frozen=True)
class DictionaryConfig:
    """The settings an SAE and a crosscoder share, checked with one-line errors that name which (`WHAT`):
    a sparse architecture's k and auxiliary loss, a ReLU one's L1 coefficient, and the optimisation's sizes.
    k is the number of latents kept per example (topk), or on average (batchtopk)."""

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ()
    WHAT: ClassVar[str] = "dictionary"
    architecture: str = "topk"
    d_sae: int = 64  # dictionary size
    k: int = 4  # latents kept (topk, batchtopk)
    l1_coefficient: float = 1e-3  # relu only
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    aux_k: int | None = None  # dead latents used by the auxiliary loss; None: d_sae // 2, at most 32
    aux_coefficient: float = 1 / 32  # 0 turns the auxiliary-k loss off
    dead_after: int = 200  # steps without activity after which a latent counts as dead
    eval_batches: int = 4  # batches of activations_fn in the fixed evaluation set

    def __post_init__(self):
        what, kinds = self.WHAT, self.ARCHITECTURES
        check(self.architecture in kinds,
              f"unknown {what} architecture {self.architecture!r}; choose one of {', '.join(kinds)}")
        check(self.d_sae > 0, f"the {what}'s dictionary size d_sae must be positive, got {self.d_sae}")
        if self.architecture != "relu":
            check(self.k > 0, f"the {what}'s k must be positive, got {self.k}")
            check(self.k <= self.d_sae, f"k={self.k} is larger than the dictionary (d_sae={self.d_sae})")
            check(self.aux_k is None or 0 < self.aux_k <= self.d_sae,
                  f"aux_k must be in 1..d_sae={self.d_sae}, got {self.aux_k}")
            check(self.aux_coefficient >= 0, f"aux_coefficient must be >= 0, got {self.aux_coefficient}")
        else:
            check(self.l1_coefficient > 0, f"the ReLU {what} needs a positive L1 coefficient, got {self.l1_coefficient}")
        check(self.steps > 0, f"{what} steps must be positive, got {self.steps}")
        check(self.batch_size > 0, f"{what} batch_size must be positive, got {self.batch_size}")
        check(self.lr > 0, f"{what} lr must be positive, got {self.lr}")
        check(self.dead_after > 0, f"dead_after must be positive, got {self.dead_after}")
        check(self.eval_batches > 0, f"eval_batches must be positive, got {self.eval_batches}")

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_sae // 2, AUX_K_MAX))


@dataclasses.dataclass(frozen=True)
class SAEConfig(DictionaryConfig):
    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("relu", "topk", "batchtopk")
    WHAT: ClassVar[str] = "SAE"

    @property
    def unit_decoder(self) -> bool:
        return self.architecture != "relu"


# ---------------------------------------------------------------------------------------------- model


def init_sae(cfg: SAEConfig, d_in: int, key: jax.Array, sample: jax.Array | None = None) -> dict:
    """{W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold []}.

    Decoder rows are random directions (unit norm for topk/batchtopk, norm 0.1 for relu, as Anthropic's
    update), the encoder their transpose, b_enc 0, b_dec the mean of `sample` when given (else 0).
    `threshold` is BatchTopK's inference threshold (state, not trained; unused by the other architectures).
    """
    W_dec = jax.random.normal(key, (cfg.d_sae, d_in), jnp.float32)
    W_dec = W_dec / jnp.linalg.norm(W_dec, axis=1, keepdims=True)
    if not cfg.unit_decoder:
        W_dec = 0.1 * W_dec
    b_dec = jnp.zeros(d_in, jnp.float32) if sample is None else jnp.asarray(sample, jnp.float32).mean(0)
    return {"W_enc": W_dec.T, "b_enc": jnp.zeros(cfg.d_sae, jnp.float32), "W_dec": W_dec, "b_dec": b_dec,
            "threshold": jnp.zeros((), jnp.float32)}


def pre_activations(sae: dict, x: jax.Array) -> jax.Array:
    return (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]


def top_mask(values: jax.Array, k, bound: int | None = None) -> jax.Array:
    """[..., n] 0/1 mask of the k largest entries of each row (exactly k, ties broken by index), by `lax.top_k`.
    A traced k (a vmapped grid) needs a static `bound` >= k: the `bound` largest are found, the first k kept."""
    static = isinstance(k, int)
    n_top = k if static else bound

    def row(v):  # [n] -> [n]
        _, idx = jax.lax.top_k(v, n_top)
        keep = jnp.ones(n_top, v.dtype) if static else (jnp.arange(n_top) < k).astype(v.dtype)
        return jnp.zeros_like(v).at[idx].set(keep)

    if not static and bound is None:
        raise ValueError("a traced k needs a static bound")
    flat = values.reshape(-1, values.shape[-1])
    return jax.vmap(row)(flat).reshape(values.shape)


def encode(cfg: SAEConfig, sae: dict, x: jax.Array, *, k=None, batch: bool = False) -> jax.Array:
    """Latents f [batch, d_sae] of x [batch, d_in]. BatchTopK uses its threshold unless `batch=True`
    (then the k * batch largest over the batch, the training semantics). `k` overrides cfg.k (may be traced,
    <= cfg.k)."""
    pre = pre_activations(sae, x)
    k = cfg.k if k is None else k
    if cfg.architecture == "relu":
        return jax.nn.relu(pre)
    if cfg.architecture == "topk":
        return jax.nn.relu(pre) * top_mask(pre, k, cfg.k)
    if batch:
        acts = jax.nn.relu(pre)
        n_keep = k * x.shape[0]
        return acts * top_mask(acts.reshape(-1), n_keep, cfg.k * x.shape[0]).reshape(acts.shape)
    return pre * (pre > sae["threshold"])


def decode(sae: dict, f: jax.Array) -> jax.Array:
    return f @ sae["W_dec"] + sae["b_dec"]


def reconstruct(cfg: SAEConfig, sae: dict, x: jax.Array, *, k=None) -> jax.Array:
    """x^ [batch, d_in] of x [batch, d_in] through the dictionary (BatchTopK with its threshold)."""
    return decode(sae, encode(cfg, sae, x, k=k))


def _smallest_kept(f: jax.Array) -> jax.Array:
    """The smallest positive activation of f (0 when none is)."""
    m = jnp.min(jnp.where(f > 0, f, jnp.inf))
    return jnp.where(jnp.isfinite(m), m, 0.0)


def aux_loss(cfg: SAEConfig, sae: dict, pre: jax.Array, residual: jax.Array, dead: jax.Array) -> jax.Array:
    """Gao et al.'s auxiliary-k loss: the top aux_k pre-activations among dead latents reconstruct the
    (stop-gradient) residual; normalised by the residual's energy. 0 when no latent is dead."""
    aux_k = cfg.resolved_aux_k
    masked = jnp.where(dead, pre, -jnp.inf)
    vals, idx = jax.lax.top_k(masked, aux_k)  # [batch, aux_k]
    z = jnp.where(jnp.isfinite(vals), jax.nn.relu(vals), 0.0)
    e_hat = jnp.einsum("bk,bkd->bd", z, sae["W_dec"][idx])
    e = jax.lax.stop_gradient(residual)
    loss = ((e - e_hat) ** 2).sum() / jnp.maximum((e**2).sum(), EPS)
    return jnp.where(dead.any(), loss, 0.0)


def sae_loss(cfg: SAEConfig, sae: dict, x: jax.Array, dead: jax.Array, *, k=None, l1_coefficient=None):
    """(loss, (f, mse)): training loss on one batch; `dead` [d_sae] bool marks dead latents (aux loss)."""
    k = cfg.k if k is None else k
    l1 = cfg.l1_coefficient if l1_coefficient is None else l1_coefficient
    pre = pre_activations(sae, x)
    f = encode(cfg, sae, x, k=k, batch=True)
    residual = x - decode(sae, f)
    mse = (residual**2).sum(-1).mean()
    if cfg.architecture == "relu":
        penalty = l1 * (f * jnp.linalg.norm(sae["W_dec"], axis=1)).sum(-1).mean()
        return mse + penalty, (f, mse)
    aux = aux_loss(cfg, sae, pre, residual, dead) if cfg.aux_coefficient > 0 else 0.0
    return mse + cfg.aux_coefficient * aux, (f, mse)


def _normalise_decoder(sae: dict) -> dict:
    W = sae["W_dec"]
    return {**sae, "W_dec": W / jnp.maximum(jnp.linalg.norm(W, axis=1, keepdims=True), EPS)}


# ---------------------------------------------------------------------------------------------- training


TRAINED = ("W_enc", "b_enc", "W_dec", "b_dec")


def train_sae(cfg: SAEConfig, activations_fn: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array,
              *, k=None, l1_coefficient=None) -> tuple[dict, dict]:
    """Train one SAE with Adam in a `lax.scan` over cfg.steps; returns (sae params, metrics).

    activations_fn(key, step) -> [batch_size, d_in] draws each step's batch (jittable: a checkpoint's
    forward pass on freshly sampled task data). `k` (<= cfg.k), `l1_coefficient` override cfg's and may be traced
    (vmap a grid of them). Jittable and vmappable as a whole.
    Metrics on a fixed evaluation set (cfg.eval_batches draws with a key of their own):
    mse (per element), fve (fraction of variance explained), l0 (mean active latents per example,
    BatchTopK with its threshold), dead (latents never active over the evaluation set), dead_train
    (latents inactive for the last dead_after steps), loss (the last step's training loss), firing [d_sae]
    (the fraction of evaluation rows each latent is active on).
    """
    init_key, data_key, eval_key = jax.random.split(key, 3)
    first = activations_fn(jax.random.fold_in(data_key, 0), jnp.asarray(0))
    sae = init_sae(cfg, first.shape[-1], init_key, sample=first)
    trained = {n: sae[n] for n in TRAINED}
    opt = optax.adam(cfg.lr)
    grad_fn = jax.value_and_grad(
        lambda p, x, dead: sae_loss(cfg, {**p, "threshold": 0.0}, x, dead, k=k, l1_coefficient=l1_coefficient),
        has_aux=True)

    def step(carry, i):
        p, opt_state, idle, theta = carry
        x = activations_fn(jax.random.fold_in(data_key, i), i)
        dead = idle >= cfg.dead_after
        (loss, (f, _)), grads = grad_fn(p, x, dead)
        updates, opt_state = opt.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        if cfg.unit_decoder:
            p = _normalise_decoder(p)
        fired = (f > 0).any(0)
        idle = jnp.where(fired, 0, idle + 1)
        if cfg.architecture == "batchtopk":
            m = _smallest_kept(f)
            theta = jnp.where(i == 0, m, THRESHOLD_DECAY * theta + (1 - THRESHOLD_DECAY) * m)
        return (p, opt_state, idle, theta), loss

    carry = (trained, opt.init(trained), jnp.zeros(cfg.d_sae, jnp.int32), jnp.zeros((), jnp.float32))
    (trained, _, idle, theta), losses = jax.lax.scan(step, carry, jnp.arange(cfg.steps))
    sae = {**trained, "threshold": theta if cfg.architecture == "batchtopk" else jnp.zeros((), jnp.float32)}

    eval_keys = jax.random.split(eval_key, cfg.eval_batches)
    x = jax.vmap(lambda kk: activations_fn(kk, jnp.asarray(cfg.steps)))(eval_keys)
    x = x.reshape(-1, x.shape[-1])
    metrics = evaluate_sae(cfg, sae, x, k=k)
    metrics["dead_train"] = (idle >= cfg.dead_after).sum()
    metrics["loss"] = losses[-1]
    return sae, metrics


def evaluate_sae(cfg: SAEConfig, sae: dict, x: jax.Array, *, k=None) -> dict:
    """{mse, fve, l0, dead, firing [d_sae] (the fraction of rows each latent is active on)} of the SAE on
    activations x [n, d_in] (BatchTopK with its inference threshold)."""
    f = encode(cfg, sae, x, k=k)
    err = x - decode(sae, f)
    sse = (err**2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    active = f > 0
    firing = active.mean(0)
    return {"mse": (err**2).mean(), "fve": 1.0 - sse / jnp.maximum(sst, EPS),
            "l0": active.sum(-1).mean(), "dead": (firing == 0).sum(), "firing": firing}


# ---------------------------------------------------------------------------------------------- ground truth


def max_cosines(decoder: jax.Array, true_features: jax.Array) -> jax.Array:
    """[n]: each true feature's [n, d_in] largest cosine similarity with a decoder row [d_sae, d_in]."""
    d = decoder / jnp.maximum(jnp.linalg.norm(decoder, axis=-1, keepdims=True), EPS)
    t = true_features / jnp.maximum(jnp.linalg.norm(true_features, axis=-1, keepdims=True), EPS)
    return (t @ d.T).max(-1)


def mmcs(decoder: jax.Array, true_features: jax.Array) -> jax.Array:
    """Mean over true features [n, d_in] of the max cosine similarity with a decoder row [d_sae, d_in]."""
    return max_cosines(decoder, true_features).mean()


def mmcs_weighted(decoder: jax.Array, true_features: jax.Array) -> jax.Array:
    """The MMCS with each true feature weighted by its norm: a model's features that have shrunk to
    nothing (TMS's dropped features) count for little, as they carry little of the activations."""
    norms = jnp.linalg.norm(true_features, axis=-1)
    return (norms * max_cosines(decoder, true_features)).sum() / jnp.maximum(norms.sum(), EPS)


def sae_measure(cfg: SAEConfig, activations: Callable, *, key: jax.Array | None = None,
                true_features: Callable | None = None, prefix: str = "sae") -> Callable:
    """An `analyze` measure family: fn(params, data) trains an SAE on `activations(params, data, key, step)`
    ([batch_size, d_in]) and returns {prefix/mse, /fve, /l0, /dead, /dead_train, /loss, /firing} (+ /mmcs when
    `true_features(params, data)` -> [n, d_in] is given). Every checkpoint uses the same key (cfg.seed)."""
    key = jax.random.key(cfg.seed) if key is None else key

    def measure(params, data):
        sae, metrics = train_sae(cfg, lambda kk, s: activations(params, data, kk, s), key)
        if true_features is not None:
            metrics["mmcs"] = mmcs(sae["W_dec"], true_features(params, data))
        return {f"{prefix}/{name}": v for name, v in metrics.items()}

    return measure
