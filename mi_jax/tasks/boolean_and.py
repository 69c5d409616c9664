"""Computation in superposition: every pairwise AND of n sparse boolean inputs with a narrow ReLU layer.

Inputs: all x in {0, 1}^n with at most 2 ones (1 + n + n(n-1)/2 of them, the whole set each step,
so the question is capacity, not generalisation). Outputs: AND(x_i, x_j) for every pair i < j
(n choose 2 logits). Model: logits = W_out ReLU(W_in x + b_in) + b_out with `n_hidden` neurons,
usually fewer than the pairs, and a LINEAR readout (no output nonlinearity: with a threshold on the
output, x_i + x_j > 1.5 would compute AND without any hidden ReLU; a linear readout needs the hidden
layer to do the nonlinear work, as in Hänni et al.). An output is read as on when > 1/2. Loss:
squared error summed over outputs, the active pair's term weighted by `pos_weight` (a positive is 1
output in n choose 2), averaged over inputs.

Metrics: `acc` (inputs with every output right), `tpr` (active pair detected, inputs with 2 ones),
`fpr` (inactive pairs predicted on), `max_err` (max |output - AND|). `random_construction` is the baseline of the universal-AND
construction (Hänni, Mendel, Vaintrob, Chan 2024): each neuron reads a random subset of inputs
(each with probability q) with weight 1 and bias -1, so it fires iff two of its inputs are on;
AND(i, j) is read as the mean of the neurons that contain both i and j, thresholded at 1/2.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.models import toy
from mi_jax.training.config import TrainConfig

BOOLEAN_AND_TRAIN = TrainConfig(
    steps=3_000, lr=3e-3, weight_decay=0.0, beta1=0.9, beta2=0.999, warmup_steps=0,
    batch_size=None, eval_every=100, ckpt_every=100,
)


@dataclasses.dataclass(frozen=True)
class BooleanAndConfig:
    """Pairwise AND of n boolean inputs (at most 2 active) through one ReLU layer of n_hidden neurons."""

    kind: ClassVar[str] = "boolean_and"
    n_inputs: int = 20
    n_hidden: int = 60
    pos_weight: float = 10.0
    train: TrainConfig = BOOLEAN_AND_TRAIN

    @property
    def n_pairs(self) -> int:
        return self.n_inputs * (self.n_inputs - 1) // 2

    def __post_init__(self):
        check(self.n_inputs >= 2, f"n_inputs must be >= 2 (an AND needs two variables), got {self.n_inputs}")
        check(self.n_hidden >= 1, f"n_hidden must be >= 1, got {self.n_hidden}")
        check(self.pos_weight > 0, f"pos_weight must be > 0, got {self.pos_weight}")
        if self.n_hidden >= self.n_pairs:
            warnings.warn(f"n_hidden={self.n_hidden} >= {self.n_pairs} pairs: one neuron per AND fits, "
                          "so no superposition is needed", stacklevel=3)


def pairs(n: int) -> np.ndarray:
    """[n_pairs, 2] the pairs i < j in lexicographic order (output k computes AND of pairs[k])."""
    return np.asarray(list(itertools.combinations(range(n), 2)), np.int32).reshape(-1, 2)


def all_inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every input with at most 2 ones -> (x [n_inputs_total, n] float32, labels [n_inputs_total, n_pairs])."""
    rows = [()] + [(i,) for i in range(n)] + [tuple(p) for p in pairs(n)]
    x = np.zeros((len(rows), n), np.float32)
    for r, on in enumerate(rows):
        x[r, list(on)] = 1
    p = pairs(n)
    labels = (x[:, p[:, 0]] * x[:, p[:, 1]]).astype(np.float32)
    return x, labels


def metrics(logits: jax.Array, labels: jax.Array, x: jax.Array) -> dict[str, jax.Array]:
    """Accuracy measures of AND outputs [batch, n_pairs] (on when > 1/2) against labels (see the module doc)."""
    pred = logits > 0.5
    pos = labels > 0
    two = x.sum(-1) == 2
    return {
        "acc": (pred == pos).all(-1).mean(dtype=jnp.float32),
        "tpr": ((pred & pos).sum(-1) > 0).sum() / jnp.maximum(two.sum(), 1),
        "fpr": (pred & ~pos).sum() / jnp.maximum((~pos).sum(), 1),
        "max_err": jnp.abs(logits - labels).max(),  # the epsilon of an epsilon-accurate construction
    }


def mse_loss(out: jax.Array, labels: jax.Array, pos_weight: float) -> jax.Array:
    """Sum over outputs of the squared error (positives weighted by pos_weight), mean over inputs."""
    weight = 1 + (pos_weight - 1) * labels
    return (weight * (out - labels) ** 2).sum(-1).mean()


def random_construction(n: int, n_hidden: int, q: float, seed: int = 0) -> dict[str, float]:
    """The universal-AND random construction's accuracy on every input (numpy; no training)."""
    rng = np.random.default_rng(seed)
    S = (rng.random((n_hidden, n)) < q).astype(np.float32)  # [hidden, in] neuron k reads inputs S[k]
    x, labels = all_inputs(n)
    h = np.maximum(x @ S.T - 1, 0)  # 1 iff two of the neuron's inputs are on (at most 2 on)
    p = pairs(n)
    both = S[:, p[:, 0]] * S[:, p[:, 1]]  # [hidden, n_pairs] neurons containing both
    readout = both.T / np.maximum(both.sum(0), 1)[:, None]  # [n_pairs, hidden]
    logits = h @ readout.T
    logits[:, both.sum(0) == 0] = 0.0  # a pair no neuron covers is never detected
    out = metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(x))
    return {k: float(v) for k, v in out.items()}


def best_random_construction(n: int, n_hidden: int, seed: int = 0) -> dict[str, float]:
    """The random construction at the inclusion probability q (of a grid) with the best accuracy."""
    best = None
    for q in np.linspace(0.05, 0.95, 19):
        r = random_construction(n, n_hidden, float(q), seed) | {"q": round(float(q), 2)}
        if best is None or r["acc"] > best["acc"]:
            best = r
    return best


class BooleanAndTask:
    """The training-side definition of an AND run (pure functions of params): every input, every step."""

    # `mi-jax llc`'s settings for this kind, as calibrated in experiments/results/llc.md
    LLC_SETTINGS = {"llc.epsilon": 1e-4, "llc.gamma": 100.0, "llc.n_chains": 4, "llc.n_draws": 200, "llc.batch_size": 32}

    def __init__(self, cfg: BooleanAndConfig):
        check(not cfg.train.interventions, "train.interventions hooks a transformer; the AND model has none")
        self.cfg = cfg
        self.x, self.labels = all_inputs(cfg.n_inputs)

    def init_params(self, key: jax.Array) -> dict:
        return toy.init_mlp(key, self.cfg.n_inputs, self.cfg.n_hidden, self.cfg.n_pairs)

    def frozen(self, path: tuple) -> bool:
        return self.cfg.train.freeze_biases and str(getattr(path[-1], "key", "")).startswith("b_")

    def llc_data(self, n_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The LLC's fixed training set: every input and its labels (all of the task, as each step trains on)."""
        return self.x, self.labels

    def batch(self, key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
        return jnp.asarray(self.x), jnp.asarray(self.labels)

    def loss(self, params: dict, batch) -> jax.Array:
        x, labels = batch
        return mse_loss(toy.apply_mlp(params, x), labels, self.cfg.pos_weight)

    def sae_hook_points(self) -> tuple[str, ...]:
        return ("hidden_pre", "hidden")

    def hooked_loss(self, params: dict, batch, hooks: dict) -> jax.Array:
        """The loss with hooks {"hidden_pre" or "hidden": fn} on the neurons (see `toy.apply_mlp`)."""
        x, labels = batch
        return mse_loss(toy.apply_mlp(params, x, hooks), labels, self.cfg.pos_weight)

    def true_features(self, params: dict, hook: str) -> jax.Array:
        """What the neurons carry: at `hidden_pre` each input's direction (a column of W_in) [n_inputs, hidden];
        at `hidden` each AND's readout direction (a row of W_out) [n_pairs, hidden]."""
        return params["W_in"].T if hook == "hidden_pre" else params["W_out"]

    def evaluate(self, params: dict) -> dict[str, jax.Array]:
        x, labels = jnp.asarray(self.x), jnp.asarray(self.labels)
        logits = toy.apply_mlp(params, x)
        out = metrics(logits, labels, x)
        out["train_loss"] = mse_loss(logits, labels, self.cfg.pos_weight)
        out["train_acc"] = out["acc"]
        return out
