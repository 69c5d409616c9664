"""Toy models of superposition (Elhage et al. 2022) as a training task: many instances, one program.

How instances map onto the training loop: ONE task's params carry a leading [instance] axis
(`W [instance, hidden, feat]`, `b_final [instance, feat]`) and the loss is the SUM over instances
of each instance's loss (as in the ARENA notebook). The gradient of a sum is the per-instance
gradient and Adam(W) acts elementwise, so every instance trains exactly as if alone (tested);
the Trainer sees one ordinary model. Seeds (`train.seeds`) still add an ensemble axis in front.

Instances form a grid [probability, relative importance] (row-major): `n_probabilities` feature
probabilities (1 - S), geometric from `prob_max` to `prob_min` (1.0 -> 0.05 over 8 gives the
notebook's 20**-linspace(0, 1, 8)), times `n_rel_importance` values of the LAST feature's
importance relative to the decay law (1 = no sweep; the n=2, m=1 phase diagram sweeps it).

Data: each feature is 0 with probability S = 1 - p, else uniform on [0, 1) (on [-1, 1) for the
abs model). ONE random number per element does it: u ~ U[0, 1); active iff u < p; value u / p,
which is uniform given u < p. The numbers come from a counter-based integer hash of
(seed, step, instance, element) (`uniform`), so any batch is a pure function of those and
runs are reproducible from the seed; it costs a few integer ops per element, far less than
`jax.random.uniform` on CPU. Correlated pairs (features 2j, 2j+1 active together, values
independent) and anti-correlated pairs (at most one of the pair active, each with probability p;
one number per pair) are options.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.models import toy
from mi_jax.training.config import TrainConfig

Correlation = Literal["independent", "correlated", "anticorrelated"]
EVAL_SEED = 0x5EED  # the fixed evaluation batch's seed (stream 1)

SUPERPOSITION_TRAIN = TrainConfig(
    steps=10_000, lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.999, warmup_steps=0,
    batch_size=1024, eval_every=100, ckpt_every=100,
)


@dataclasses.dataclass(frozen=True)
class SuperpositionConfig:
    """Toy models of superposition: n_features -> n_hidden, a grid of instances trained as one program."""

    kind: ClassVar[str] = "superposition"
    n_features: int = 5
    n_hidden: int = 2
    model: toy.ModelKind = "relu"
    n_probabilities: int = 8
    prob_max: float = 1.0
    prob_min: float = 0.05
    feature_probability: tuple[float, ...] = ()  # explicit per-level probabilities (overrides the three above)
    importance_decay: float = 1.0  # importance_i = importance_decay ** i
    importance: tuple[float, ...] = ()  # explicit per-feature importance (overrides the decay)
    n_rel_importance: int = 1
    rel_importance_min: float = 0.1
    rel_importance_max: float = 10.0
    correlation: Correlation = "independent"
    eval_batch: int = 4096
    train: TrainConfig = SUPERPOSITION_TRAIN

    def __post_init__(self):
        n, m = self.n_features, self.n_hidden
        check(n >= 1 and m >= 1, f"n_features and n_hidden must be >= 1, got {n}, {m}")
        check(self.model in ("relu", "linear", "abs"), f"model must be relu, linear or abs, got {self.model!r}")
        check(self.n_probabilities >= 1, f"n_probabilities must be >= 1, got {self.n_probabilities}")
        for name in ("prob_max", "prob_min"):
            value = getattr(self, name)
            check(0 < value <= 1, f"{name} must be a probability in (0, 1], got {value}")
        check(self.prob_min <= self.prob_max, f"prob_min={self.prob_min} exceeds prob_max={self.prob_max}")
        bad = [p for p in self.feature_probability if not 0 <= p <= 1]
        check(not bad, f"feature_probability values must be in [0, 1], got {bad[0] if bad else ''}")
        check(self.importance_decay > 0, f"importance_decay must be > 0, got {self.importance_decay}")
        check(all(i >= 0 for i in self.importance), f"importance values must be >= 0, got {self.importance}")
        check(
            not self.importance or len(self.importance) == n,
            f"importance has {len(self.importance)} values for {n} features",
        )
        check(self.n_rel_importance >= 1, f"n_rel_importance must be >= 1, got {self.n_rel_importance}")
        check(
            0 < self.rel_importance_min <= self.rel_importance_max,
            f"need 0 < rel_importance_min <= rel_importance_max, got {self.rel_importance_min}, {self.rel_importance_max}",
        )
        check(
            self.correlation == "independent" or n % 2 == 0,
            f"correlation={self.correlation!r} pairs features up: n_features must be even, got {n}",
        )
        check(
            self.correlation != "anticorrelated" or max(self.probabilities) <= 0.5,
            "anticorrelated pairs need every feature probability <= 0.5 (a pair is active with probability 2p)",
        )
        check(self.eval_batch >= 1, f"eval_batch must be >= 1, got {self.eval_batch}")
        if m >= n and self.model != "abs":
            warnings.warn(f"n_hidden={m} >= n_features={n}: every feature can have its own dimension, "
                          "so no superposition is possible", stacklevel=3)

    @property
    def probabilities(self) -> np.ndarray:
        """The feature probability levels (1 - S) [n_levels]."""
        if self.feature_probability:
            return np.asarray(self.feature_probability, np.float32)
        t = np.linspace(0, 1, self.n_probabilities)
        return (self.prob_max * (self.prob_min / self.prob_max) ** t).astype(np.float32)

    @property
    def rel_importances(self) -> np.ndarray:
        """[n_rel_importance] relative importance of the last feature (geometric; [1.] if no sweep)."""
        if self.n_rel_importance == 1:
            return np.ones(1, np.float32)
        t = np.linspace(0, 1, self.n_rel_importance)
        lo, hi = self.rel_importance_min, self.rel_importance_max
        return (lo * (hi / lo) ** t).astype(np.float32)

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.probabilities), len(self.rel_importances)

    @property
    def n_instances(self) -> int:
        return self.grid[0] * self.grid[1]

    def instance_probability(self) -> np.ndarray:
        """[instance] feature probability of each instance."""
        return np.repeat(self.probabilities, self.grid[1])

    def instance_importance(self) -> np.ndarray:
        """[instance, feat] importance of each feature in each instance."""
        n = self.n_features
        base = np.asarray(self.importance, np.float32) if self.importance else self.importance_decay ** np.arange(n)
        imp = np.tile(base.astype(np.float32), (self.n_instances, 1))
        imp[:, -1] *= np.tile(self.rel_importances, self.grid[0])
        return imp


# ---- counter-based uniforms ------------------------------------------------------------------

def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser (the 'lowbias32' constants): a bijection that scrambles every bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def uniform(words: jax.Array, step, instance, shape: tuple[int, ...], stream: int = 0) -> jax.Array:
    """U[0, 1) float32 of `shape`, a pure function of (seed words [2] uint32, step, instance, stream).

    Two hash rounds per element: h = mix(mix(index + k1) ^ k2), with (k1, k2) hashed from the
    counters, so streams of different steps/instances are unrelated, not shifted copies."""
    u32 = lambda v: jnp.asarray(v).astype(jnp.uint32)  # noqa: E731
    k1 = _mix32(_mix32(_mix32(words[0] ^ u32(step)) + u32(instance)) ^ jnp.uint32((stream * 0x9E3779B9 + 1) % 2**32))
    k2 = _mix32(k1 ^ words[1])
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
    h = _mix32(_mix32(index + k1) ^ k2)
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def key_words(key: jax.Array) -> jax.Array:
    """A jax PRNG key (typed or raw) -> its seed words [2] uint32."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return data.reshape(-1)[-2:].astype(jnp.uint32)


def sparse_features(
    words, step, instance, p, batch: int, n_features: int,
    correlation: Correlation = "independent", signed: bool = False, stream: int = 0,
) -> jax.Array:
    """One instance's batch [batch, feat]: each feature 0 w.p. 1 - p, else U[0, 1) (U[-1, 1) if signed)."""
    p = jnp.asarray(p, jnp.float32)
    if correlation == "anticorrelated":  # one number per pair: [0, p) first active, [p, 2p) second
        u = uniform(words, step, instance, (batch, n_features // 2), stream)
        first = jnp.where(u < p, u / p, 0.0)
        second = jnp.where((u >= p) & (u < 2 * p), (u - p) / p, 0.0)
        x = jnp.stack([first, second], -1)
        active = x > 0
    elif correlation == "correlated":  # the pair shares u0 < p; the second value is its own u1
        u = uniform(words, step, instance, (batch, n_features // 2, 2), stream)
        on = u[..., :1] < p
        x = jnp.where(on, jnp.stack([u[..., 0] / p, u[..., 1]], -1), 0.0)
        active = jnp.broadcast_to(on, x.shape)
    else:
        u = uniform(words, step, instance, (batch, n_features), stream)
        active = u < p
        x = jnp.where(active, u / p, 0.0)
    x = x.reshape(batch, n_features)
    if signed:
        x = jnp.where(active.reshape(batch, n_features), 2 * x - 1, 0.0)
    return x


class SuperpositionTask:
    """Training-side definition of a TMS sweep (params with a leading [instance] axis)."""

    def __init__(self, cfg: SuperpositionConfig):
        check(not cfg.train.interventions, "train.interventions hooks a transformer; toy models of superposition have none")
        self.cfg = cfg
        self.probability = jnp.asarray(cfg.instance_probability())  # [instance]
        self.importance = jnp.asarray(cfg.instance_importance())  # [instance, feat]
        self.instances = jnp.arange(cfg.n_instances)

    # -- one instance --------------------------------------------------------------------------
    def init_instance(self, key: jax.Array, instance) -> dict:
        return toy.init_params(jax.random.fold_in(key, instance), self.cfg.n_features, self.cfg.n_hidden, self.cfg.model)

    def instance_batch(self, words, step, instance, p, batch: int | None = None, stream: int = 0) -> jax.Array:
        c = self.cfg
        return sparse_features(words, step, instance, p, batch or c.train.batch_size or 1024, c.n_features,
                               c.correlation, c.model == "abs", stream)

    def instance_loss(self, params: dict, x: jax.Array, importance: jax.Array) -> jax.Array:
        return toy.weighted_loss(params, x, importance, self.cfg.model)

    # -- the Task protocol -----------------------------------------------------------------------
    def init_params(self, key: jax.Array) -> dict:
        return jax.vmap(self.init_instance, (None, 0))(key, self.instances)

    def frozen(self, path: tuple) -> bool:
        return self.cfg.train.freeze_biases and str(getattr(path[-1], "key", "")).startswith("b_")

    def batch(self, key: jax.Array, step) -> jax.Array:
        """x [instance, batch, feat] at `step`."""
        words = key_words(key)
        return jax.vmap(self.instance_batch, (None, None, 0, 0))(words, step, self.instances, self.probability)

    def loss(self, params: dict, x: jax.Array) -> jax.Array:
        return jax.vmap(self.instance_loss)(params, x, self.importance).sum()

    def eval_batch(self) -> jax.Array:
        """The fixed evaluation batch [instance, eval_batch, feat] (its own seed and stream)."""
        words = jnp.asarray([EVAL_SEED, 0], jnp.uint32)
        fn = lambda k, p: self.instance_batch(words, 0, k, p, self.cfg.eval_batch, stream=1)  # noqa: E731
        return jax.vmap(fn)(self.instances, self.probability)

    def instance_losses(self, params: dict, x: jax.Array | None = None) -> jax.Array:
        """[instance] loss of each instance on `x` (default: the evaluation batch)."""
        x = self.eval_batch() if x is None else x
        return jax.vmap(self.instance_loss)(params, x, self.importance)

    def evaluate(self, params: dict) -> dict[str, jax.Array]:
        losses = self.instance_losses(params)
        return {"test_loss": losses.sum(), "instance_loss": losses}

    # -- what an SAE reads: the hidden layer of every instance ---------------------------------------
    INSTANCE_AXES = 1  # activations and losses carry [instance] first: an SAE per instance

    def sae_hook_points(self) -> tuple[str, ...]:
        return ("hidden",)

    def hooked_loss(self, params: dict, x: jax.Array, hooks: dict) -> jax.Array:
        """[instance] losses on x [instance, batch, feat] with hooks["hidden"] ([instance, batch, hidden] ->
        the same) applied to the hidden layer."""
        h = jax.vmap(toy.hidden)(params, x)
        if "hidden" in hooks:
            h = hooks["hidden"](h)
        out = jax.vmap(lambda p, hh: toy.output(p, hh, self.cfg.model))(params, h)
        return jax.vmap(lambda p, xx, i, o: toy.weighted_loss(p, xx, i, self.cfg.model, out=o))(
            params, x, self.importance, out)

    def true_features(self, params: dict, hook: str) -> jax.Array:
        """The features' directions in the hidden layer [instance, feat, hidden] (for the abs model the
        directions its inputs write before the hidden ReLU)."""
        return jnp.swapaxes(jax.vmap(toy.features)(params), -1, -2)
