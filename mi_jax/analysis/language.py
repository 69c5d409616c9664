"""Language-model measures: pure functions of ONE model's params and fixed data (`probe_data`).

On the fixed validation windows (`LanguageTask.eval_tokens`, [n, seq_len + 1]):
    position_loss     the loss at each token [seq_len] (entry t - 1: predicting token t)
    icl_score         loss at token `late` minus loss at token `early` (Olsson et al. 2022)
    inductable_loss   mean loss on tokens whose bigram (previous token, token) occurred earlier in the
                      window, which copying from context can predict; other_loss on the rest
On one-token contexts (each vocabulary token alone at position 0; the model's prediction there can
use nothing but that token, so it is the model's bigram table q(b | a)):
    bigram_kl         sum_a p(a) KL(p(. | a) || q(. | a)), p the training stream's bigram statistics;
                      0 for a model that is exactly the bigram table
    unigram_kl        sum_a p(a) KL(p(.) || q(. | a)): small while the model predicts unigram
                      frequencies whatever the token, rising as it learns bigrams
    context_gain      on the validation windows, the model's own bigram loss -log q(x_t | x_{t-1}) minus
                      its loss in context, per token: the nats it gains from anything but the previous
                      token (earlier tokens, and the position). 0 for a model that reads nothing else; a
                      1-layer model gains it by skip-trigrams, a 2-layer one by induction as well
On repeated random tokens (`probe`, the induction task's probe over the vocabulary without BOS):
    previous_token, duplicate_token, induction, prefix_matching   [layer, head], as in
                      `analysis.induction`; and the composition scores (>= 2 layers) and OV circuits
On repeated text (`repeated_text`: the first half of each validation window, then the same tokens again):
    text_induction    [layer, head]: attention from the repeat to the token after the current token's
                      earlier copy. Induction heads of a model trained on text may hardly fire on random
                      tokens it never saw in such orders; on its own kind of text they do
    repeat_loss_gap   the loss on the repeat minus the loss on the first copy: 0 without in-context copying

These are the stages Hoogland et al. 2024 read off a 2-layer attention-only LM: unigrams, bigrams,
n-grams, previous-token heads, then induction heads (with the loss bump and the ICL score's fall).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.analysis import induction as ind
from mi_jax.models import transformer as tfm
from mi_jax.models.fast import stored
from mi_jax.tasks import induction as induction_task
from mi_jax.tasks import language as task_lib

PROBE_SEED = 7
MIN_RISE = 0.25  # an induction head "forms" when its score rises this much (the induction kind's criterion)
COPYING = 0.1  # nats a token: the repeat's loss this far below the first copy's is in-context copying


def inductable(windows: np.ndarray) -> np.ndarray:
    """windows [n, seq_len + 1] -> bool [n, seq_len]: entry t - 1 is whether the bigram (token t - 1,
    token t) occurred earlier in its window (ending before t)."""
    previous, current = windows[:, :-1], windows[:, 1:]  # the bigram each label ends
    n, length = current.shape
    same = (previous[:, :, None] == previous[:, None, :]) & (current[:, :, None] == current[:, None, :])
    earlier = np.tril(np.ones((length, length), bool), k=-1)
    return (same & earlier[None]).any(-1)


def ngram_statistics(stream: np.ndarray, vocab: int) -> dict[str, np.ndarray]:
    """The stream's unigram p(a) [vocab] and bigram p(b | a) [vocab, vocab] (rows of unseen tokens uniform),
    and their entropies (scalars): the unigram's, and the bigram rows' weighted by p(a)."""
    stream = np.asarray(stream, np.int64)
    unigram = np.bincount(stream, minlength=vocab).astype(np.float64)
    pairs = np.bincount(stream[:-1] * vocab + stream[1:], minlength=vocab * vocab).reshape(vocab, vocab)
    rows = pairs.sum(1, keepdims=True)
    unigram = (unigram / unigram.sum()).astype(np.float32)
    bigram = np.where(rows > 0, pairs / np.maximum(rows, 1), 1.0 / vocab).astype(np.float32)
    plogp = lambda p: np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)  # noqa: E731  (float64)
    return {"unigram": unigram, "bigram": bigram, "unigram_entropy": np.float32(-plogp(unigram.astype(np.float64))),
            "bigram_entropy": np.float32(-unigram.astype(np.float64) @ plogp(bigram.astype(np.float64)))}


def probe_data(task, n_probe: int = 32) -> dict[str, np.ndarray]:
    """The fixed data of every measure: the validation windows and their inductable mask, the n-gram
    tables of the training stream, the repeated-token probe (its span half the context) and the repeated text."""
    vocab = task.model.d_vocab
    seq_len = task.cfg.seq_len
    probe = induction_task.repeated_probe(jax.random.key(PROBE_SEED), n_probe, seq_len, vocab - 1, seq_len // 2)
    first_half = task.eval_tokens[:, : seq_len // 2]
    return {"validation": task.eval_tokens, "inductable": inductable(task.eval_tokens),
            **ngram_statistics(task.streams.train, vocab), "probe": np.asarray(probe) + 1,  # no BOS in the probe
            "repeated_text": np.concatenate([first_half, first_half], 1)}


def one_token_log_probs(params: dict, model: tfm.TransformerConfig, hooks=None) -> jax.Array:
    """The model's bigram table log q(b | a) [a, b]: every vocabulary token alone at position 0. Stored
    (`fast.stored`): the measures read it in several reductions, each of which XLA:CPU would otherwise
    recompute it in (the table and its readers 20.6 -> 12.8 ms at vocab 2,048)."""
    logits, _ = tfm.apply(params, jnp.arange(model.d_vocab)[:, None], model, hooks=hooks)
    return stored(jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1))


def ngram_kl(log_q: jax.Array, data: dict) -> dict[str, jax.Array]:
    """bigram_kl and unigram_kl (the module doc) of the model's bigram table log_q [a, b], each a cross-entropy
    less the stream's entropy (`ngram_statistics`), so that no logarithm of the tables is taken per model."""
    p_a = data["unigram"]
    return {"bigram_kl": -p_a @ (data["bigram"] * log_q).sum(-1) - data["bigram_entropy"],
            "unigram_kl": -p_a @ (log_q @ p_a) - data["unigram_entropy"]}


def ngram_distances(params: dict, data: dict, model: tfm.TransformerConfig, hooks=None) -> dict[str, jax.Array]:
    """bigram_kl and unigram_kl (the module doc) from every token alone at position 0."""
    return ngram_kl(one_token_log_probs(params, model, hooks), data)


def make_measures(task) -> dict:
    """{family: fn(params, data) -> {name: value}} over `probe_data(task)`. The `text` family computes the
    validation, one-token and repeated-text measures together, sharing what they can: one bigram table for the
    n-gram distances and the context gain, and the validation pass as the repeated text's first copy (the
    validation windows' first half, which a causal model reads alike): its loss, and its keys and values, from
    which the repeat alone is run."""
    cfg, model, hooks = task.cfg, task.model, task.hooks
    span = cfg.seq_len // 2

    def text(params, data):
        windows = data["validation"]
        kv = [f"blocks.{layer}.attn.hook_{x}" for layer in range(model.n_layers) for x in "kv"]
        loss, cache = tfm.label_loss(params, windows[:, :-1], windows[:, 1:], model, cache=kv, hooks=hooks)  # [n, seq_len]
        mask = data["inductable"]
        position_loss = loss.mean(0)
        log_q = one_token_log_probs(params, model, hooks)  # [a, b]
        own_bigram_loss = -log_q[windows[:, :-1], windows[:, 1:]]  # [n, seq_len]
        past = [(cache[f"blocks.{layer}.attn.hook_k"][:, :span], cache[f"blocks.{layer}.attn.hook_v"][:, :span])
                for layer in range(model.n_layers)]
        return {"position_loss": position_loss, "icl_score": task_lib.icl_score(position_loss, cfg.early, cfg.late),
                "inductable_loss": (loss * mask).sum() / jnp.maximum(mask.sum(), 1),
                "other_loss": (loss * ~mask).sum() / jnp.maximum((~mask).sum(), 1),
                "context_gain": (own_bigram_loss - loss).mean(), **ngram_kl(log_q, data),
                **repeated_text(params, data["repeated_text"][:, span:], past, loss)}

    def repeated_text(params, repeat, past, validation_loss):
        """repeat [n, half]: the first half of each validation window again, after it (`past`: the validation
        pass's keys and values there, a causal model's same for the same tokens at the same positions);
        validation_loss [n, seq_len], the first copy's loss among it."""
        half = repeat.shape[1]
        names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.n_layers)]
        # entry i: predicting the repeat's token i + 1
        repeat_loss, cache = tfm.label_loss(params, repeat, repeat[:, 1:], model, cache=names, hooks=hooks,
                                            logit_positions=slice(0, -1), past=past)
        # pattern row i is query half + i; the token after its earlier copy is key i + 1
        induction = [ind.offset_score(cache[name][:, None], np.arange(half), -1) for name in names]
        return {"text_induction": jnp.concatenate(induction),
                "repeat_loss_gap": repeat_loss.mean() - validation_loss[:, : half - 1].mean()}

    def attention(params, data):
        layer_patterns, _ = ind.attention_cache(params, data["probe"], model, hooks)
        per_layer = [ind.head_scores(pattern[:, None], data["probe"], span) for pattern in layer_patterns]
        return {k: jnp.concatenate([scores[k] for scores in per_layer]) for k in ind.HEAD_SCORES}

    measures = {"text": text, "attention": attention, "ov": lambda p, d: {"ov_circuit": ind.ov_circuit(p)}}
    if model.n_layers >= 2:
        measures["composition"] = lambda p, d: {f"{k}_composition": v for k, v in ind.composition_scores(p).items()}
    return measures


def steps_to_copying(steps, repeat_loss_gap) -> int | None:
    """The first checkpoint step from which the repeat's loss stays at least COPYING below the first copy's
    (None: it never does): the onset of induction on text, robust to one noisy evaluation.
    steps, repeat_loss_gap [time]."""
    copying = np.asarray(repeat_loss_gap) <= -COPYING
    if not copying[-1]:
        return None
    after = np.flatnonzero(~copying)
    return int(steps[after[-1] + 1 if len(after) else 0])


def stages(steps, results: dict, loss_steps, loss) -> dict:
    """One member's stages, read off its series: steps [time], results {name: [time, ...]} (one member's),
    loss_steps, loss [n_evals] (the validation loss). The steps where the bigram distance, the gain from
    context beyond the previous token, the best previous-token head (layer 0's, which an induction circuit
    reads) and the best last-layer induction head change fastest (`induction_formed`: whether that head's
    score rose by MIN_RISE at all), and where the ICL score falls fastest; the best previous-token head of
    any layer; the induction window (10-90% of the best head's rise); `steps_to_induction`, the onset
    of copying on repeated text (`steps_to_copying`); the loss bump (`analysis.induction.loss_bump`), found
    on the validation loss alone, to set beside that onset."""
    last = results["induction"].shape[1] - 1
    head = int(np.argmax(results["induction"][-1, last]))
    prev = int(np.argmax(results["previous_token"][-1, 0]))
    induction = results["induction"][:, last, head]
    icl_step, icl_slope = ind.fastest_change(steps, results["icl_score"])
    out = {
        "induction_head": f"L{last}H{head}", "previous_token_head": f"L0H{prev}",
        "induction_score": {"start": float(induction[0]), "final": float(induction[-1])},
        "icl_score": {"start": float(results["icl_score"][0]), "final": float(results["icl_score"][-1])},
        "bigram_kl": {"start": float(results["bigram_kl"][0]), "final": float(results["bigram_kl"][-1])},
        "bigram_step": ind.fastest_change(steps, results["bigram_kl"])[0],
        "context_gain": {"start": float(results["context_gain"][0]), "final": float(results["context_gain"][-1])},
        "context_step": ind.fastest_change(steps, results["context_gain"])[0],
        "previous_token_step": ind.fastest_change(steps, results["previous_token"][:, 0, prev])[0],
        "induction_step": ind.fastest_change(steps, induction)[0],
        "induction_formed": bool(induction.max() - induction[0] >= MIN_RISE),
        "induction_window": list(ind.transition_window(steps, induction)),
        "icl_step": icl_step, "icl_slope": icl_slope,
        "inductable_minus_other_final": float(results["inductable_loss"][-1] - results["other_loss"][-1]),
    }
    text = results["text_induction"][:, last]  # [time, head]
    text_head = int(np.argmax(text[-1]))
    out["text_induction"] = {"head": f"L{last}H{text_head}", "start": float(text[0, text_head]),
                             "final": float(text[-1, text_head]),
                             "step": ind.fastest_change(steps, text[:, text_head])[0],
                             "window": list(ind.transition_window(steps, text[:, text_head]))}
    out["repeat_loss_gap"] = {"start": float(results["repeat_loss_gap"][0]), "final": float(results["repeat_loss_gap"][-1])}
    out["steps_to_induction"] = steps_to_copying(steps, results["repeat_loss_gap"])
    final = results["previous_token"][-1]  # [layer, head]; a model may put its previous-token heads in layer 1
    layer, best = np.unravel_index(int(np.argmax(final)), final.shape)
    out["previous_token_best"] = {"head": f"L{layer}H{best}", "final": float(final[layer, best])}
    return {**out, **ind.loss_bump(loss_steps, loss)}
