"""Next-token prediction on real text (the `language` kind): a transformer trained on windows of a
corpus read from this machine (`mi_jax.io.corpus`: the standard library's source by default).

Data: the corpus's documents are split by document, seeded (`data.split_seed`), into a training
and a validation set; no validation document reaches a training window. Each set is one stream: its
documents' tokens, each document starting with BOS, end to end. A batch is `train.batch_size`
windows of seq_len + 1 tokens (the model reads the first seq_len and predicts the last seq_len)
starting at positions drawn uniformly from (the run's data key, step) inside the compiled chunk,
from the training stream kept once on the device: a killed run resumes bit-identically, and nothing
is copied per step. Windows may cross document boundaries, as packed pretraining batches do: the
BOS token marks where a document starts, and attention is not masked at it (the model learns to
read BOS). A corpus whose store holds more than `data.max_tokens` tokens stops with one line naming
that budget rather than streaming from the host.

Evaluation: the mean loss on a fixed batch of `n_eval` validation windows (`test_loss`) and Olsson
et al.'s in-context-learning score on it, the loss at token `late` minus the loss at token `early`
(50 and 500 at seq_len 1,024, scaled with seq_len).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.config import check
from mi_jax.io import corpus as corpus_lib
from mi_jax.models import transformer as tfm
from mi_jax.tasks.common import merged_hooks, training_hooks, vector_hook_points
from mi_jax.training.config import TrainConfig
from mi_jax.training.parallel import split_batch

ICL_EARLY, ICL_LATE, ICL_CONTEXT = 50, 500, 1024  # Olsson et al.'s tokens, at their context length


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes tokens.

    source        "stdlib" (this interpreter's standard library source), "stdlib+tests" (with its tests,
                  2.6x larger), a folder or a file
    tokenizer     "bpe" (a byte-level BPE of vocab_size tokens, trained on the corpus), "bytes" (256
                  byte tokens) or the path of a tokenizer.json (it needs a <|bos|> token)
    vocab_size    the BPE's vocabulary, BOS and the 256 bytes included
    val_fraction  the share of documents held out for validation (at least one document)
    split_seed    seeds the split into training and validation documents
    max_tokens    the memory budget: the whole token store lives on the device
    """

    source: str = "stdlib"
    tokenizer: str = "bpe"
    vocab_size: int = 2048
    val_fraction: float = 0.05
    split_seed: int = 0
    max_tokens: int = 200_000_000

    def __post_init__(self):
        # paths absolute, so that a resume or an analysis from another folder reads the same files
        if self.source not in corpus_lib.STDLIB_SOURCES:
            object.__setattr__(self, "source", str(Path(self.source).expanduser().absolute()))
        if self.tokenizer not in ("bpe", "bytes"):
            object.__setattr__(self, "tokenizer", str(Path(self.tokenizer).expanduser().absolute()))
        check(self.vocab_size >= 258, f"data.vocab_size must be >= 258 (BOS, 256 bytes and a merge), got {self.vocab_size}")
        corpus_lib.token_dtype(self.vocab_size)
        check(0 < self.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        check(self.max_tokens >= 1, f"data.max_tokens must be >= 1, got {self.max_tokens}")


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
    """A transformer language model trained on a text corpus."""

    kind: ClassVar[str] = "language"
    data: DataConfig = DataConfig()
    seq_len: int = 128  # tokens the model reads (its n_ctx)
    n_eval: int = 64  # validation windows in the fixed evaluation batch
    eval_seed: int = 12345
    icl_early: int | None = None  # token index; None: 50 / 1024 of seq_len
    icl_late: int | None = None  # token index; None: 500 / 1024 of seq_len
    model: tfm.TransformerConfig = tfm.TransformerConfig(n_layers=2, d_model=128, n_heads=4, d_mlp=None,
                                                         layer_norm=True)
    train: TrainConfig = TrainConfig(steps=2000, lr=1e-3, weight_decay=0.0, batch_size=32, eval_every=50,
                                     ckpt_every=50)

    @property
    def early(self) -> int:
        return self.icl_early if self.icl_early is not None else max(1, round(self.seq_len * ICL_EARLY / ICL_CONTEXT))

    @property
    def late(self) -> int:
        return self.icl_late if self.icl_late is not None else round(self.seq_len * ICL_LATE / ICL_CONTEXT)

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the BPE's size, 257 for bytes (BOS and 256 bytes), or a tokenizer file's."""
        d = self.data
        if d.tokenizer in ("bpe", "bytes"):
            return d.vocab_size if d.tokenizer == "bpe" else 1 + 256
        return corpus_lib.tokenizer_file_vocab(d.tokenizer)

    @property
    def transformer(self) -> tfm.TransformerConfig:
        """The model config with the context length and vocabulary filled in."""
        return dataclasses.replace(self.model, n_ctx=self.model.n_ctx or self.seq_len, d_vocab=self.vocab_size,
                                   d_vocab_out=self.vocab_size)

    def __post_init__(self):
        check(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
        check(self.n_eval >= 1, f"n_eval must be >= 1, got {self.n_eval}")
        check(1 <= self.early < self.late <= self.seq_len - 1,
              f"need 1 <= icl_early ({self.early}) < icl_late ({self.late}) <= seq_len - 1 ({self.seq_len - 1})")
        m = self.model
        check(m.n_ctx is None or m.n_ctx >= self.seq_len, f"model.n_ctx={m.n_ctx} < seq_len={self.seq_len}")
        check(m.d_vocab is None and m.d_vocab_out is None,
              "model.d_vocab is the tokenizer's vocabulary; leave it unset (set data.vocab_size)")
        check(self.train.batch_size is not None, "a language model draws fresh windows: set train.batch_size")


# ----------------------------------------------------------------------------- corpus -> token streams


@dataclasses.dataclass(frozen=True)
class Streams:
    """A corpus tokenized and split: train and validation streams [n] (uint16/uint32), their documents
    (indices into the store) and the tokenizer."""

    train: np.ndarray
    validation: np.ndarray
    train_documents: np.ndarray
    validation_documents: np.ndarray
    tokenizer: object
    corpus: corpus_lib.Corpus
    store: corpus_lib.TokenStore

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) document indices, each sorted: a seeded permutation's first
    max(1, round(val_fraction * n)) documents are the validation set."""
    check(n_documents >= 2, f"the corpus has {n_documents} document: a validation split needs at least 2")
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(max(1, round(val_fraction * n_documents)), n_documents - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_streams(cfg: LanguageConfig) -> Streams:
    """Read, tokenize (cached) and split the config's corpus; one ConfigError line for a corpus too
    large for `data.max_tokens` or too short for a window."""
    d = cfg.data
    corpus = corpus_lib.read_corpus(d.source)
    tokenizer = corpus_lib.load_tokenizer(corpus, d.tokenizer, d.vocab_size)
    store = corpus_lib.token_store(corpus, tokenizer)
    check(len(store.tokens) <= d.max_tokens,
          f"corpus {d.source} has {len(store.tokens):,} tokens, above data.max_tokens={d.max_tokens:,} "
          "(the memory budget of the token store on the device); raise it or use a smaller corpus")
    train_docs, val_docs = split_documents(store.n_documents, d.val_fraction, d.split_seed)
    train, validation = store.documents(train_docs), store.documents(val_docs)
    window = cfg.seq_len + 1
    check(len(train) >= window, f"corpus {d.source} has {len(train)} training tokens, fewer than one window "
                                f"of seq_len + 1 = {window}")
    check(len(validation) >= window, f"the validation documents of corpus {d.source} hold {len(validation)} tokens, "
                                     f"fewer than one window of {window}: raise data.val_fraction")
    return Streams(train, validation, train_docs, val_docs, tokenizer, corpus, store)


def windows(stream: jax.Array, starts: jax.Array, length: int) -> jax.Array:
    """stream [n], starts [batch] -> int32 tokens [batch, length] (stream[start:start + length] each)."""
    index = starts[:, None] + jnp.arange(length)[None]
    return stream[index].astype(jnp.int32)


def window_starts(key: jax.Array, n: int, stream_length: int, length: int) -> jax.Array:
    """n window starts, uniform over the places a window of `length` fits in the stream: [n] int32."""
    return jax.random.randint(key, (n,), 0, stream_length - length + 1)


def window_loss(params: dict, tokens: jax.Array, model: tfm.TransformerConfig, hooks=None) -> jax.Array:
    """Windows [batch, seq_len + 1] -> the loss of predicting tokens 1.. from those before [batch, seq_len]
    (entry t - 1: token t)."""
    return tfm.label_loss(params, tokens[:, :-1], tokens[:, 1:], model, hooks=hooks)[0]


def icl_score(position_loss: jax.Array, early: int, late: int) -> jax.Array:
    """Loss on token `late` minus loss on token `early` (Olsson et al. 2022); position_loss [..., seq_len]."""
    return position_loss[..., late - 1] - position_loss[..., early - 1]


class LanguageTask:
    """The training-side definition of a language run (pure functions of params, the streams on the device)."""

    # the training set's loss and Hessian products 32 windows at a time: the logits of all 256 at once, with
    # their derivatives, take gigabytes a member
    LLC_SETTINGS = {"llc.epsilon": 1e-3, "llc.gamma": 100.0, "llc.n_chains": 4, "llc.n_draws": 100,
                    "llc.batch_size": 16, "llc.loss_chunk_size": 32, "n_examples": 256, "lanczos_steps": 12,
                    "trace_probes": 4}

    def __init__(self, cfg: LanguageConfig):
        self.cfg = cfg
        self.streams = load_streams(cfg)
        self.model = cfg.transformer
        check(self.streams.vocab_size <= self.model.d_vocab,
              f"the tokenizer has {self.streams.vocab_size} tokens, more than the model's {self.model.d_vocab}")
        self.hooks = training_hooks(cfg)
        self.shared_data = {"train": self.streams.train}  # on the devices once; the chunk gathers windows from it
        self.eval_tokens = self.validation_windows(cfg.n_eval, jax.random.key(cfg.eval_seed))

    def validation_windows(self, n: int, key: jax.Array) -> np.ndarray:
        """n validation windows at seeded starts: [n, seq_len + 1] int32."""
        stream = self.streams.validation
        starts = window_starts(key, n, len(stream), self.cfg.seq_len + 1)
        return np.asarray(windows(jnp.asarray(stream), starts, self.cfg.seq_len + 1))

    def run_files(self) -> dict[str, str]:
        """What a run dir keeps of its data: the tokenizer (to decode tokens) and the corpus's identity."""
        s = self.streams
        identity = {**s.corpus.identity, "tokenizer_sha256": corpus_lib.tokenizer_hash(s.tokenizer),
                    "vocab_size": s.vocab_size, "tokens": {"train": len(s.train), "validation": len(s.validation)},
                    "documents": {"train": len(s.train_documents), "validation": len(s.validation_documents)},
                    "python": s.corpus.identity.get("python", ".".join(map(str, sys.version_info[:3])))}
        return {"tokenizer.json": s.tokenizer.to_str(), "corpus.json": json.dumps(identity, indent=1)}

    def check_base(self, base_dir, what: str) -> None:
        """A fine-tune reads tokens as its base did: the same tokenizer, or one ConfigError line."""
        recorded = Path(base_dir) / "corpus.json"
        theirs = json.loads(recorded.read_text()).get("tokenizer_sha256") if recorded.exists() else None
        check(theirs in (None, corpus_lib.tokenizer_hash(self.streams.tokenizer)),
              f"{what}: that run has another tokenizer; fine-tune with its own: "
              f"--set data.tokenizer={Path(base_dir).resolve() / 'tokenizer.json'}")

    def init_params(self, key: jax.Array) -> dict:
        return tfm.init_params(self.model, key)

    def frozen(self, path: tuple) -> bool:
        return self.cfg.train.freeze_biases and tfm.is_bias(path)

    def llc_data(self, n_examples: int = 1024) -> np.ndarray:
        """The LLC's fixed training set: n_examples training windows [example, seq_len + 1], seeded apart
        from the evaluation batch."""
        key = jax.random.fold_in(jax.random.key(self.cfg.eval_seed), 2)
        starts = window_starts(key, n_examples, len(self.streams.train), self.cfg.seq_len + 1)
        return np.asarray(windows(jnp.asarray(self.streams.train), starts, self.cfg.seq_len + 1))

    def batch(self, key: jax.Array, step: jax.Array, shared: dict) -> jax.Array:
        """Training windows for `step` from the training stream shared["train"] [n]: tokens [batch_size, seq_len + 1]."""
        n, length = self.cfg.train.batch_size, self.cfg.seq_len + 1
        starts = window_starts(jax.random.fold_in(key, step), n, shared["train"].shape[0], length)
        return windows(shared["train"], starts, length)

    def loss(self, params: dict, batch: jax.Array) -> jax.Array:
        return self.hooked_loss(params, batch, {})

    def hooked_loss(self, params: dict, batch: jax.Array, hooks: dict) -> jax.Array:
        """The loss with `hooks` {name: fn} in the forward pass as well (an SAE spliced in, say)."""
        return window_loss(params, batch, self.model, merged_hooks(self.hooks, hooks)).mean()

    def sae_hook_points(self) -> tuple[str, ...]:
        return vector_hook_points(self.model)

    def evaluate(self, params: dict) -> dict[str, jax.Array]:
        """test_loss and icl_score on the fixed validation batch."""
        position_loss = window_loss(params, split_batch(self.eval_tokens), self.model, self.hooks).mean(0)
        return {"test_loss": position_loss.mean(), "icl_score": icl_score(position_loss, self.cfg.early, self.cfg.late)}
