"""Next-token prediction on sequences only in-context learning can predict (induction heads).

Three tasks, every batch drawn on the fly from (key, step) by a jitted function:

repeated  Uniform random tokens whose last L tokens repeat an earlier span of L tokens
          (`x, A, y, A`): L uniform in [min_repeat_len, repeat_len] and the start of the first A
          uniform over the places it fits, per sequence, so no fixed offset or position gives the
          answer and only induction does. Optimal loss: ln(d_vocab) for every predicted token
          except the L - 1 after the first token of the second A, which are certain: mean
          ~ ln(d_vocab) * (1 - E[L - 1] / (seq_len - 1)), a little more in practice (chance
          repeats of a token in a small vocabulary make the earlier occurrence ambiguous).
markov    In-context bigrams: each sequence is a Markov chain over the d_vocab tokens with its
          own transition matrix, rows drawn from Dirichlet(markov_alpha). The best predictor is
          the Bayesian one (Dirichlet posterior over the current token's row, from the counts
          so far), so the optimal loss falls with position; only in-context statistics help.
mixed     A markov sequence whose last L tokens repeat an earlier span (as in `repeated`).

The in-context-learning score (Olsson et al. 2022) is the loss on the token at position
`icl_late` minus the loss on the token at `icl_early` (negative once the model learns in context).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.models import transformer as tfm
from mi_jax.tasks.common import label_log_probs, merged_hooks, training_hooks, vector_hook_points
from mi_jax.training.config import TrainConfig
from mi_jax.training.parallel import split_batch

TASKS = ("repeated", "markov", "mixed")
TaskName = Literal["repeated", "markov", "mixed"]


@dataclasses.dataclass(frozen=True)
class InductionConfig:
    """A small (attention-only) transformer trained on next-token prediction of in-context sequences."""

    kind: ClassVar[str] = "induction"
    task: TaskName = "repeated"
    seq_len: int = 48
    d_vocab: int = 32
    repeat_len: int = 24  # longest repeated span (and the span of the fixed analysis probe)
    min_repeat_len: int = 8
    markov_alpha: float = 0.3
    n_eval: int = 256  # sequences in the fixed evaluation batch
    eval_seed: int = 12345
    icl_early: int | None = None  # token index; None: max(1, seq_len // 10)
    icl_late: int | None = None  # token index; None: seq_len - 1
    model: tfm.TransformerConfig = tfm.TransformerConfig(n_layers=2, d_model=64, n_heads=2, d_mlp=None)
    train: TrainConfig = TrainConfig(steps=2000, lr=1e-3, weight_decay=0.0, batch_size=32, eval_every=50, ckpt_every=50)

    @property
    def transformer(self) -> tfm.TransformerConfig:
        """The model config with the task's context length and vocabulary filled in."""
        m = self.model
        return dataclasses.replace(m, n_ctx=m.n_ctx or self.seq_len, d_vocab=self.d_vocab, d_vocab_out=self.d_vocab)

    @property
    def early(self) -> int:
        return self.icl_early if self.icl_early is not None else max(1, self.seq_len // 10)

    @property
    def late(self) -> int:
        return self.icl_late if self.icl_late is not None else self.seq_len - 1

    def __post_init__(self):
        check(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        check(self.seq_len >= 4, f"seq_len must be >= 4, got {self.seq_len}")
        check(self.d_vocab >= 2, f"d_vocab={self.d_vocab} is too small: an in-context task needs >= 2 tokens")
        check(
            2 * self.repeat_len <= self.seq_len,
            f"repeat_len={self.repeat_len} > seq_len/2={self.seq_len / 2}: a span and its repeat must fit the sequence",
        )
        check(
            2 <= self.min_repeat_len <= self.repeat_len,
            f"min_repeat_len must be in [2, repeat_len={self.repeat_len}], got {self.min_repeat_len}",
        )
        check(self.markov_alpha > 0, f"markov_alpha must be > 0, got {self.markov_alpha}")
        check(self.n_eval >= 1, f"n_eval must be >= 1, got {self.n_eval}")
        check(
            1 <= self.early < self.late <= self.seq_len - 1,
            f"need 1 <= icl_early ({self.early}) < icl_late ({self.late}) <= seq_len - 1 ({self.seq_len - 1})",
        )
        m = self.model
        check(m.n_ctx is None or m.n_ctx >= self.seq_len, f"model.n_ctx={m.n_ctx} < seq_len={self.seq_len}")
        check(
            m.d_vocab in (None, self.d_vocab) and m.d_vocab_out in (None, self.d_vocab),
            f"model.d_vocab is set by the task (d_vocab={self.d_vocab}); leave it unset",
        )
        check(self.train.batch_size is not None, "induction tasks draw fresh batches: set train.batch_size")


# ----------------------------------------------------------------------------- sequences


def repeat_tail(tokens: jax.Array, span: jax.Array, source: jax.Array) -> jax.Array:
    """tokens [batch, pos], span, source [batch] -> tokens whose last `span` tokens repeat the span
    starting at `source` (requires source + span <= pos - span; `source = pos - 2 * span` gives `x, A, A`)."""
    n = tokens.shape[1]
    pos = jnp.arange(n)[None]
    start = n - span[:, None]
    index = jnp.where(pos >= start, pos - start + source[:, None], pos)
    return jnp.take_along_axis(tokens, index, axis=1)


def random_tokens(key: jax.Array, n: int, seq_len: int, d_vocab: int) -> jax.Array:
    """[n, seq_len] uniform tokens."""
    return jax.random.randint(key, (n, seq_len), 0, d_vocab)


def markov_tokens(key: jax.Array, n: int, seq_len: int, d_vocab: int, alpha: float) -> jax.Array:
    """[n, seq_len] Markov chains, each with its own transition matrix (rows ~ Dirichlet(alpha))."""
    k_mat, k_first, k_walk = jax.random.split(key, 3)
    transition = jax.random.dirichlet(k_mat, jnp.full((d_vocab,), alpha), (n, d_vocab))  # [n, vocab, vocab]
    log_t = jnp.log(jnp.maximum(transition, 1e-30))
    first = jax.random.randint(k_first, (n,), 0, d_vocab)

    def step(current, key_t):
        nxt = jax.random.categorical(key_t, log_t[jnp.arange(n), current])
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(k_walk, seq_len - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


@functools.partial(jax.jit, static_argnames=("cfg", "n"))  # one compiled call, not an op-by-op compile of each op
def sample(cfg: InductionConfig, key: jax.Array, n: int) -> jax.Array:
    """n sequences of the config's task -> tokens [n, seq_len] int32."""
    k_tok, k_span = jax.random.split(key)
    if cfg.task == "repeated":
        tokens = random_tokens(k_tok, n, cfg.seq_len, cfg.d_vocab)
    else:
        tokens = markov_tokens(k_tok, n, cfg.seq_len, cfg.d_vocab, cfg.markov_alpha)
    if cfg.task in ("repeated", "mixed"):
        k_len, k_src = jax.random.split(k_span)
        span = jax.random.randint(k_len, (n,), cfg.min_repeat_len, cfg.repeat_len + 1)
        source = jax.random.randint(k_src, (n,), 0, cfg.seq_len - 2 * span + 1)
        tokens = repeat_tail(tokens, span, source)
    return tokens.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("n", "seq_len", "d_vocab", "span"))
def repeated_probe(key: jax.Array, n: int, seq_len: int, d_vocab: int, span: int) -> jax.Array:
    """The fixed analysis probe: uniform tokens whose last `span` repeat the `span` before. [n, seq_len]."""
    tokens = random_tokens(key, n, seq_len, d_vocab)
    span = jnp.full((n,), span)
    return repeat_tail(tokens, span, seq_len - 2 * span).astype(jnp.int32)


# ----------------------------------------------------------------------------- loss


def per_token_loss(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Next-token cross-entropy: logits [batch, pos, vocab], tokens [batch, pos] -> [batch, pos - 1].

    Entry t - 1 is the loss of predicting token t (from tokens 0..t-1).
    """
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -label_log_probs(logp, tokens[:, 1:])


def per_position_loss(params: dict, tokens: jax.Array, model: tfm.TransformerConfig, hooks=None) -> jax.Array:
    """Mean next-token loss at each position: [pos - 1] (entry t - 1: predicting token t)."""
    logits, _ = tfm.apply(params, tokens, model, hooks=hooks)
    return per_token_loss(logits, tokens).mean(0)


def icl_score(position_loss: jax.Array, early: int, late: int) -> jax.Array:
    """Loss on token `late` minus loss on token `early` (Olsson et al. 2022); position_loss [pos - 1]."""
    return position_loss[late - 1] - position_loss[early - 1]


def uniform_loss(cfg: InductionConfig) -> float:
    """Loss of the uniform predictor, ln(d_vocab): the loss at initialisation, roughly."""
    return math.log(cfg.d_vocab)


class InductionTask:
    """The training-side definition of an induction run (pure functions of params)."""

    # `mi-jax llc`'s settings for this kind, as calibrated in experiments/results/llc.md
    LLC_SETTINGS = {"llc.epsilon": 1e-3, "llc.gamma": 100.0, "llc.n_chains": 4, "llc.n_draws": 100, "llc.batch_size": 16,
                    "n_examples": 256, "lanczos_steps": 12, "trace_probes": 4}

    def __init__(self, cfg: InductionConfig):
        self.cfg = cfg
        self.model = cfg.transformer
        self.hooks = training_hooks(cfg)
        key = jax.random.key(cfg.eval_seed)
        self.eval_tokens = np.asarray(sample(cfg, key, cfg.n_eval))
        self.probe_tokens = np.asarray(
            repeated_probe(jax.random.fold_in(key, 1), cfg.n_eval, cfg.seq_len, cfg.d_vocab, cfg.repeat_len)
        )

    def init_params(self, key: jax.Array) -> dict:
        return tfm.init_params(self.model, key)

    def frozen(self, path: tuple) -> bool:
        return self.cfg.train.freeze_biases and tfm.is_bias(path)

    def llc_data(self, n_examples: int = 1024) -> np.ndarray:
        """The LLC's fixed training set: n_examples task sequences [example, seq_len], seeded apart from the
        eval batch."""
        return np.asarray(sample(self.cfg, jax.random.fold_in(jax.random.key(self.cfg.eval_seed), 2), n_examples))

    def batch(self, key: jax.Array, step: jax.Array) -> jax.Array:
        """Fresh sequences for `step`: tokens [batch_size, seq_len]."""
        return sample(self.cfg, jax.random.fold_in(key, step), self.cfg.train.batch_size)

    def loss(self, params: dict, batch: jax.Array) -> jax.Array:
        return self.hooked_loss(params, batch, {})

    def hooked_loss(self, params: dict, batch: jax.Array, hooks: dict) -> jax.Array:
        """The loss with `hooks` {name: fn} in the forward pass as well (an SAE spliced in, say)."""
        logits, _ = tfm.apply(params, batch, self.model, hooks=merged_hooks(self.hooks, hooks))
        return per_token_loss(logits, batch).mean()

    def sae_hook_points(self) -> tuple[str, ...]:
        return vector_hook_points(self.model)

    def evaluate(self, params: dict) -> dict[str, jax.Array]:
        """test_loss and icl_score on the fixed task batch; probe_copy_loss on the repeated probe's second copy."""
        eval_tokens, probe_tokens = split_batch((self.eval_tokens, self.probe_tokens))  # over a data-parallel chunk's devices
        position_loss = per_position_loss(params, eval_tokens, self.model, self.hooks)
        probe_loss = per_position_loss(params, probe_tokens, self.model, self.hooks)
        span = self.cfg.repeat_len
        return {
            "test_loss": position_loss.mean(),
            "icl_score": icl_score(position_loss, self.cfg.early, self.cfg.late),
            "probe_copy_loss": probe_loss[-(span - 1):].mean(),
        }
