"""Modular arithmetic `a op b mod p` (Nanda et al. 2023), as a training task.

Inputs are three tokens `(a, b, =)` with `=` the token `p`; the label is `a op b mod p`,
predicted at the last position. Vocabulary: p + 1 input tokens, p output classes.
Ops: `+`, `-`, `*`, `/` (p prime, b != 0, a * b^(p-2) mod p), and `x2+y2` (a^2 + b^2 mod p).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.trees import leaf_name
from mi_jax.models import transformer as tfm
from mi_jax.tasks.common import label_log_probs, merged_hooks, training_hooks, vector_hook_points
from mi_jax.training.config import TrainConfig

Op = Literal["+", "-", "*", "/", "x2+y2"]
N_INPUT_TOKENS = 3  # a, b, =


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@dataclasses.dataclass(frozen=True)
class GrokkingConfig:
    """A transformer trained on `a op b mod p` (the grokking experiment)."""

    kind: ClassVar[str] = "grokking"
    p: int = 113
    op: Op = "+"
    train_frac: float = 0.3
    data_seed: int = 598
    train_indices: tuple[int, ...] = ()  # explicit train pairs a * p + b (the test split is the rest); () = seeded split
    model: tfm.TransformerConfig = tfm.TransformerConfig()
    train: TrainConfig = TrainConfig()

    @property
    def transformer(self) -> tfm.TransformerConfig:
        """The model config with the task's context length and vocabularies filled in."""
        m = self.model
        return dataclasses.replace(
            m, n_ctx=m.n_ctx or N_INPUT_TOKENS, d_vocab=m.d_vocab or self.p + 1, d_vocab_out=m.d_vocab_out or self.p
        )

    def __post_init__(self):
        check(self.p >= 2, f"p must be >= 2, got {self.p}")
        check(self.op in ("+", "-", "*", "/", "x2+y2"), f"op must be one of + - * / x2+y2, got {self.op!r}")
        check(self.op != "/" or is_prime(self.p), f"p={self.p} is not prime: division mod p needs a prime")
        check(0 < self.train_frac <= 1, f"train_frac must be in (0, 1], got {self.train_frac}")
        m = self.model
        check(
            m.n_ctx is None or m.n_ctx >= N_INPUT_TOKENS,
            f"model.n_ctx={m.n_ctx} is too small for the modular task ({N_INPUT_TOKENS} tokens: a, b, =)",
        )
        check(m.d_vocab is None or m.d_vocab >= self.p + 1, f"model.d_vocab={m.d_vocab} < p + 1 = {self.p + 1}")
        check(
            m.d_vocab_out is None or m.d_vocab_out >= self.p,
            f"model.d_vocab_out={m.d_vocab_out} < p = {self.p}",
        )
        n_pairs = len(all_pairs(self.p, self.op)[1])
        if self.train_indices:
            ids = self.train_indices
            check(
                all(0 <= i < self.p * self.p and (self.op != "/" or i % self.p) for i in ids),
                f"train_indices must be pair indices a * p + b in [0, {self.p * self.p})"
                + (" with b != 0 for division" if self.op == "/" else ""),
            )
            check(len(set(ids)) == len(ids), "train_indices has duplicates")
        check(
            round(self.train_frac * n_pairs) >= 1,
            f"train_frac={self.train_frac} leaves no training pairs out of {n_pairs}",
        )


def all_pairs(p: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    """Every input of the task. -> tokens [n_pairs, 3] int32 (a, b, =), labels [n_pairs] int32.

    Pairs are ordered a-major (index = a * p + b, skipping b = 0 for division).
    """
    a, b = (x.ravel() for x in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
    if op == "+":
        labels = (a + b) % p
    elif op == "-":
        labels = (a - b) % p
    elif op == "*":
        labels = (a * b) % p
    elif op == "/":
        labels = (a * np.array([pow(int(x), p - 2, p) for x in b])) % p
    else:
        labels = (a * a + b * b) % p
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1)
    return tokens.astype(np.int32), labels.astype(np.int32)


def train_test_split(n: int, train_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) -> (train_idx, test_idx), each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_frac * n))
    return np.sort(order[:n_train]), np.sort(order[n_train:])


@dataclasses.dataclass(frozen=True)
class GrokkingData:
    tokens: np.ndarray  # [n_pairs, 3] every input
    labels: np.ndarray  # [n_pairs]
    train_idx: np.ndarray
    test_idx: np.ndarray

    @classmethod
    def from_config(cls, cfg: GrokkingConfig) -> "GrokkingData":
        tokens, labels = all_pairs(cfg.p, cfg.op)
        if cfg.train_indices:
            # pair index a * p + b -> row of `tokens` (they differ for division, which skips b = 0)
            in_train = np.isin(tokens[:, 0].astype(np.int64) * cfg.p + tokens[:, 1], cfg.train_indices)
            train_idx, test_idx = np.flatnonzero(in_train), np.flatnonzero(~in_train)
        else:
            train_idx, test_idx = train_test_split(len(labels), cfg.train_frac, cfg.data_seed)
        return cls(tokens, labels, train_idx, test_idx)


def cross_entropy(logits: jax.Array, labels: jax.Array, f64: bool = False, weights: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy; logits [batch, vocab_out], labels [batch]. In float64 when `f64`. With
    `weights` [batch], the weighted mean (NaN where they sum to 0: an empty split)."""
    if f64:
        logits = logits.astype(jnp.float64)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if weights is None:
        return -label_log_probs(logp, labels).mean()
    return -(label_log_probs(logp, labels) * weights).sum() / weights.sum()


def label_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-log softmax(logits)[label] of each row: logits [row, c], labels [row] -> [row], to float32's
    relative precision at any size, losses of ~1e-7 included (logsumexp - x_label keeps no digit there).

    With t = max(x_l, max_c x_c - 60): -log p(l) = (t - x_l) + log1p(expm1(x_l - t) + Σ_{c≠l} e^(x_c - t)).
    When the label is within 60 of the top, t = x_l and this is log1p of the other classes' e^(x_c - x_l);
    the label is left out by its index, not by comparing values (XLA may recompute the logits in each
    fusion, rounded differently); no term exceeds e^60, so 10^6 classes still fit in float32.
    """
    at_label = jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
    shift = jnp.maximum(at_label, logits.max(-1) - 60.0)
    others = jnp.where(jnp.arange(logits.shape[-1]) == labels[:, None], 0.0, jnp.exp(logits - shift[:, None]))
    return (shift - at_label) + jnp.log1p(jnp.expm1(at_label - shift) + others.sum(-1))


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """argmax(logits) == label per row, ties to the first maximum as argmax: logits [row, c], labels [row]
    -> [row] bool (as compares and maxima: a CPU argmax reduction is far slower)."""
    top = logits.max(-1)
    at_label = jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
    before = jnp.where(jnp.arange(logits.shape[-1]) < labels[:, None], logits, -jnp.inf).max(-1)
    return (at_label >= top) & (before < top)


class GrokkingTask:
    """The training-side definition of a grokking run (pure functions of params).

    Members of one sweep program may differ in MEMBER_KEYS: `member_data(member_cfg)` gives a member's
    arrays (the weight of each of the p² pairs in its train split, the scale of its initial weights),
    which `init_params`, `batch` and `evaluate` then take; its loss is the weighted mean over all pairs
    (the same number as the mean over its train pairs).
    """

    MEMBER_KEYS = ("train_frac", "data_seed", "model.init_std")
    # `mi-jax llc`'s settings for this kind, as calibrated in experiments/results/llc.md
    LLC_SETTINGS = {"llc.epsilon": 3e-3, "llc.gamma": 100.0, "llc.n_beta": 2.0, "llc.n_chains": 4, "llc.n_draws": 200,
                    "llc.batch_size": 64}

    def __init__(self, cfg: GrokkingConfig):
        self.cfg = cfg
        self.data = GrokkingData.from_config(cfg)
        d = self.data
        self.train_tokens, self.train_labels = d.tokens[d.train_idx], d.labels[d.train_idx]
        self.test_tokens, self.test_labels = d.tokens[d.test_idx], d.labels[d.test_idx]
        n_train = len(d.train_idx)
        bs = cfg.train.batch_size
        check(bs is None or bs <= n_train, f"train.batch_size={bs} exceeds the {n_train} training pairs")
        self.hooks = training_hooks(cfg)

    def init_params(self, key: jax.Array, member: dict | None = None) -> dict:
        params = tfm.init_params(self.cfg.transformer, key)
        if member is None:
            return params
        # the weights are drawn N(0, std): a member's own std is this draw scaled (biases and LN stay)
        scaled = lambda path, x: x * member["init_scale"] if leaf_name(path).split(".")[-1].startswith("W_") else x  # noqa: E731
        return jax.tree_util.tree_map_with_path(scaled, params)

    def member_data(self, cfg: GrokkingConfig) -> dict[str, np.ndarray]:
        """A member's arrays from its own config: train_weight [pair] (1 on its train split's pairs, of all
        p² in `GrokkingData` order), init_scale [] (its init std over this task's)."""
        d = GrokkingData.from_config(cfg)
        bs = cfg.train.batch_size
        check(bs is None or bs <= len(d.train_idx), f"train.batch_size={bs} exceeds the {len(d.train_idx)} training "
              f"pairs of train_frac={cfg.train_frac}")
        weight = np.zeros(len(d.labels), np.float32)
        weight[d.train_idx] = 1
        return {"train_weight": weight, "init_scale": np.float32(cfg.transformer.std / self.cfg.transformer.std)}

    def frozen(self, path: tuple) -> bool:
        return self.cfg.train.freeze_biases and tfm.is_bias(path)

    def llc_data(self, n_examples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The LLC's fixed training set: every train pair, (tokens [example, 3], labels [example])."""
        return self.train_tokens, self.train_labels

    def batch(self, key: jax.Array, step: jax.Array, member: dict | None = None) -> tuple[jax.Array, ...]:
        """The training batch at `step`: the whole training set, or a fresh seeded sample of it. A member's
        (with `member`): every pair with its train weight, or a sample of its train pairs with weight 1."""
        bs = self.cfg.train.batch_size
        if member is not None:
            tokens, labels, weight = jnp.asarray(self.data.tokens), jnp.asarray(self.data.labels), member["train_weight"]
            if bs is None:
                return tokens, labels, weight
            idx = jax.random.choice(jax.random.fold_in(key, step), len(labels), (bs,), replace=False, p=weight / weight.sum())
            return tokens[idx], labels[idx], jnp.ones(bs, weight.dtype)
        tokens, labels = jnp.asarray(self.train_tokens), jnp.asarray(self.train_labels)
        if bs is None or bs == len(labels):
            return tokens, labels
        idx = jax.random.choice(jax.random.fold_in(key, step), len(labels), (bs,), replace=False)
        return tokens[idx], labels[idx]

    def last_logits(self, params: dict, tokens: jax.Array, extra_hooks: dict | None = None) -> jax.Array:
        """logits at the `=` position [batch, vocab_out], via the last-position fast path; with the training
        interventions' hooks and `extra_hooks` {name: fn} in place when there are any."""
        hooks = merged_hooks(self.hooks, extra_hooks)
        if hooks:  # the fast path takes no hooks: the whole forward pass, then its last position
            logits, _ = tfm.apply(params, tokens, self.cfg.transformer, hooks=hooks)
            return logits[:, -1, : self.cfg.p]
        logits, _ = tfm.apply(params, tokens, self.cfg.transformer, last_position_only=True)
        return logits[:, -1, : self.cfg.p]

    def loss(self, params: dict, batch) -> jax.Array:
        return self.hooked_loss(params, batch, {})

    def hooked_loss(self, params: dict, batch, hooks: dict) -> jax.Array:
        """The loss with `hooks` {name: fn} in the forward pass as well (an SAE spliced in, say)."""
        tokens, labels, *weight = batch  # a member's batch carries each pair's weight
        return cross_entropy(self.last_logits(params, tokens, hooks), labels, self.cfg.train.logsoftmax_f64, *weight)

    def sae_hook_points(self) -> tuple[str, ...]:
        return vector_hook_points(self.cfg.transformer)

    def evaluate(self, params: dict, member: dict | None = None) -> dict[str, jax.Array]:
        """train/test loss (`label_nll`) and accuracy (`correct`), as the grokking measures compute them."""
        if member is not None:  # a member's splits as weights over every pair
            logits, labels = self.last_logits(params, jnp.asarray(self.data.tokens)), jnp.asarray(self.data.labels)
            nll, right = label_nll(logits, labels), correct(logits, labels).astype(jnp.float32)
            out = {}
            for split, weight in (("train", member["train_weight"]), ("test", 1 - member["train_weight"])):
                out[f"{split}_loss"] = (nll * weight).sum() / weight.sum()
                out[f"{split}_acc"] = (right * weight).sum() / weight.sum()
            return out
        out = {}
        for split, tokens, labels in (
            ("train", self.train_tokens, self.train_labels),
            ("test", self.test_tokens, self.test_labels),
        ):
            if len(labels) == 0:
                continue
            logits, labels = self.last_logits(params, jnp.asarray(tokens)), jnp.asarray(labels)
            out[f"{split}_loss"] = label_nll(logits, labels).mean()
            out[f"{split}_acc"] = correct(logits, labels).mean(dtype=jnp.float32)
        return out
