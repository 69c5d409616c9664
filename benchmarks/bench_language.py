"""Language-model benchmarks (the `language` kind, the language_attn_2l preset), each against its peer:

`lm_2l_step`: tokens/s of a training step of language_attn_2l's model (2-layer attention-only,
d_model 128, 4 heads, LayerNorm, n_ctx 128, vocab 2048, batch 32, AdamW, evaluations every 50 steps)
against TransformerLens training the same model on windows of the same token stream
(`benchmarks/peers/tl_lm_step.py`), paired chunk by chunk as `induction_2l_step` is.
`lm_store`: wall time to build the BPE tokenizer (vocab 2048) and the token store of the stdlib corpus
from an empty cache with `mi_jax.io.corpus`, against `tokenizers` alone training the same BPE and
encoding the same documents with one `encode_batch` (same venv, same tokenizers).
`lm_analysis`: every language measure over a 200-checkpoint series (a short run of the preset with a
snapshot every step) in one `analyze` call over the run's `Trajectory`, compilation included,
against a TransformerLens loop over the run's `mi-jax export` (`benchmarks/peers/tl_lm_analysis.py`),
whose values are held against mi_jax's (`results_agree`).
`lm_full_step`: tokens/s and MFU of the full-size preset language_attn_2l_full in float32 and bfloat16,
for an accelerator (no peer: TransformerLens on the same card is for a machine that has both).

    python benchmarks/bench.py --only lm_2l_step            # records the row (see bench.py)
    python benchmarks/bench_language.py [NAME ...]          # prints the rows, records nothing
    MI_JAX_BENCH_QUICK=1 python benchmarks/bench_language.py  # a smoke run: small sizes, one round
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run alone: the shared bench helpers

from checkpoint_loops import agree, first_and_cached, loop_seconds  # noqa: E402
from chunk_timing import time_chunks  # noqa: E402
from peer_runs import PEER_SCRIPTS, ServedPeer, paired_figures, paired_rounds  # noqa: E402

from mi_jax import runtime  # noqa: E402
from mi_jax.config import override  # noqa: E402
from mi_jax.presets import load  # noqa: E402
from mi_jax.tasks import make_task  # noqa: E402
from mi_jax.training.loop import Trainer  # noqa: E402

PRESET = "language_attn_2l"


def quick() -> bool:
    """A smoke run (MI_JAX_BENCH_QUICK=1): small sizes and one round, figures that mean nothing."""
    return os.environ.get("MI_JAX_BENCH_QUICK", "") not in ("", "0")


def median(xs) -> float:
    return round(float(np.median(xs)), 3)


@contextlib.contextmanager
def environ(**values):
    """Environment variables set while the block runs, then as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- lm_2l_step


def lm_2l_step(rounds: int = 8) -> dict:
    """Tokens/s of language_attn_2l's training (one seed; batch 32 windows of 128 tokens, the
    evaluation on 64 validation windows every 50 steps included): `tokens_per_s` as the preset trains
    (each batch split over the local devices, `train.data_parallel`), `one_device_tokens_per_s` and
    `data_parallel_tokens_per_s` with and without that split, and TransformerLens doing the same steps
    and evaluations on windows of the same training stream. Paired: each round times one 50-step chunk of each, one after the
    other; the speedups are medians of the per-round ratios (this machine's speed drifts)."""
    cfg = load(PRESET)
    if quick():
        rounds = 1
        cfg = override(cfg, {"train.ckpt_every": "10", "train.eval_every": "5"})
    split = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data_parallel=True))
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data_parallel=False))
    preset = "split" if cfg.train.data_parallel else "one"
    chunk, tokens_per_step = cfg.train.ckpt_every, cfg.train.batch_size * cfg.seq_len
    with runtime.quiet():
        tasks = {"one": make_task(plain), "split": make_task(split)}
    trainers, states = {}, {}
    for name, c in (("one", plain), ("split", split)):
        trainers[name] = Trainer(tasks[name], c.train)
        _, states[name] = time_chunks(trainers[name], trainers[name].init_state(), 1)  # compiled and warm
    task, m = tasks["one"], cfg.transformer
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "tokens.npz"
        np.savez(data, train=task.streams.train, eval=np.asarray(task.eval_tokens))
        peer = ServedPeer(PEER_SCRIPTS / "tl_lm_step.py", [
            "--threads", os.cpu_count(), "--layers", m.n_layers, "--d-model", m.d_model, "--heads", m.n_heads,
            "--d-head", m.d_head, "--vocab", m.d_vocab, "--seq", cfg.seq_len, "--batch", cfg.train.batch_size,
            "--lr", cfg.train.lr, "--beta1", cfg.train.beta1, "--beta2", cfg.train.beta2,
            "--weight-decay", cfg.train.weight_decay, "--lr-warmup", cfg.train.warmup_steps,
            "--eval-every", cfg.train.eval_every, "--n-eval", cfg.n_eval, "--icl-early", cfg.early,
            "--icl-late", cfg.late, "--data", data.resolve()])
        ms = {"one": [], "split": [], "peer": []}
        for _ in range(rounds):
            for name, trainer in trainers.items():
                dt, states[name] = time_chunks(trainer, states[name], 1, warm=False)
                ms[name].append(1e3 * dt / chunk)
            ms["peer"].append(peer.ms_per_step(chunk))
        peer.close()
    per_s = lambda ms_: round(tokens_per_step / (ms_ / 1e3))  # noqa: E731
    row = {"tokens_per_s": per_s(median(ms[preset])), "ms_per_step": median(ms[preset]),
           "one_device_tokens_per_s": per_s(median(ms["one"])), "data_parallel_tokens_per_s": per_s(median(ms["split"])), "data_parallel_ms_per_step": median(ms["split"]),
           "devices": jax.local_device_count(), "rounds": rounds, "steps_per_round": chunk,
           "tokens_per_step": tokens_per_step, "batch_size": cfg.train.batch_size, "seq_len": cfg.seq_len,
           "d_model": m.d_model, "d_vocab": m.d_vocab, "eval_every": cfg.train.eval_every}
    if peer.error or None in ms["peer"]:
        return {**row, "peer_error": peer.error or "the peer stopped answering"}
    ratios = {name: np.array(ms["peer"]) / np.array(ms[name]) for name in trainers}  # per round
    return {**row, "transformer_lens_tokens_per_s": per_s(median(ms["peer"])),
            "transformer_lens_ms_per_step": median(ms["peer"]),
            "speedup_vs_transformer_lens": round(float(np.median(ratios[preset])), 2),
            "one_device_speedup_vs_transformer_lens": round(float(np.median(ratios["one"])), 2),
            "data_parallel_speedup_vs_transformer_lens": round(float(np.median(ratios["split"])), 2),
            "speedup_range": [round(float(ratios[preset].min()), 2), round(float(ratios[preset].max()), 2)]}


# ----------------------------------------------------------------------------- lm_store


def _plain_tokenizers(vocab_size: int) -> tuple[dict, object, list]:
    """What a `tokenizers` user writes: read the same files, train the same byte-level BPE, encode every
    document in one encode_batch -> ({stage: seconds}, the tokenizer, the encodings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mi_jax.io.corpus import BOS, stdlib_files

    t0 = time.perf_counter()
    _, files = stdlib_files()
    texts = [t for t in (p.read_text(encoding="utf-8", errors="replace") for p in files) if t.strip()]
    t1 = time.perf_counter()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    t2 = time.perf_counter()
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    t3 = time.perf_counter()
    return {"read_s": t1 - t0, "train_s": t2 - t1, "encode_s": t3 - t2, "total_s": t3 - t0}, tokenizer, encodings


def _mi_jax_store(vocab_size: int) -> tuple[dict, object, object]:
    """mi_jax.io.corpus from an empty cache (a fresh MI_JAX_CACHE): read the corpus, build the BPE and
    the token store, as a first `mi-jax train` of the preset does -> ({stage: seconds}, tokenizer, store)."""
    from mi_jax.io import corpus as corpus_lib

    with tempfile.TemporaryDirectory() as folder, environ(MI_JAX_CACHE=folder), runtime.quiet():
        t0 = time.perf_counter()
        corpus = corpus_lib.read_corpus("stdlib")
        t1 = time.perf_counter()
        tokenizer = corpus_lib.load_tokenizer(corpus, "bpe", vocab_size)
        t2 = time.perf_counter()
        store = corpus_lib.token_store(corpus, tokenizer, progress=False)
        t3 = time.perf_counter()
        store = dataclasses.replace(store, tokens=np.array(store.tokens))  # off the cache before it goes
    return {"read_s": t1 - t0, "bpe_s": t2 - t1, "store_s": t3 - t2, "total_s": t3 - t0}, tokenizer, store


def lm_store(rounds: int = 4) -> dict:
    """Seconds to build language_attn_2l's BPE (vocab 2048) and token store of the stdlib corpus from an
    empty cache with mi_jax.io.corpus (`mi_jax_s`: read and hash the corpus, train the BPE, encode
    every document and write the store) against `tokenizers` alone (`tokenizers_s`: read the same
    files, train the same BPE, one encode_batch of the same documents); both in this process, with
    the tokenizers library's own threads. Paired rounds, which one goes first alternating, after one
    untimed build of each (a process's first BPE training runs faster than its later ones; the files
    are read once before, so both find them in the page cache); medians, and the median per-round
    ratio `mi_jax_over_tokenizers` (no target: the store should add little). `same_tokens`: the
    tokenizers are the same and the store holds exactly the plain encodings, each document after a BOS."""
    vocab_size = load(PRESET).data.vocab_size
    if quick():
        rounds, vocab_size = 2, 512
    from mi_jax.io import corpus as corpus_lib

    corpus_lib.read_corpus("stdlib")  # the files in the page cache for both
    if not quick():  # untimed: a process's first BPE training runs faster than its later ones, whichever it is
        _mi_jax_store(vocab_size)
        _plain_tokenizers(vocab_size)
    ours, plain, same = [], [], True
    for r in range(rounds):
        order = (_mi_jax_store, _plain_tokenizers) if r % 2 == 0 else (_plain_tokenizers, _mi_jax_store)
        done = {build: build(vocab_size) for build in order}  # alternating which goes first
        (mine, tokenizer, store), (theirs, their_tokenizer, encodings) = done[_mi_jax_store], done[_plain_tokenizers]
        ours.append(mine)
        plain.append(theirs)
        bos = their_tokenizer.token_to_id(corpus_lib.BOS)
        flat = np.concatenate([np.asarray([bos, *e.ids]) for e in encodings])
        same &= tokenizer.to_str() == their_tokenizer.to_str() and np.array_equal(store.tokens, flat)
        n_documents, n_tokens = store.n_documents, int(len(store.tokens))
        del done, store, encodings, flat  # nothing of this round's held through the next
    figures = lambda rows: {k: median([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    ratios = [a["total_s"] / b["total_s"] for a, b in zip(ours, plain)]
    return {"mi_jax_s": figures(ours)["total_s"], "tokenizers_s": figures(plain)["total_s"],
            "mi_jax_over_tokenizers": round(float(np.median(ratios)), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "mi_jax_stages_s": figures(ours), "tokenizers_stages_s": figures(plain), "rounds": rounds,
            "vocab_size": vocab_size, "documents": n_documents, "tokens": n_tokens,
            "same_tokens": bool(same)}


# ----------------------------------------------------------------------------- lm_analysis


def _peer_agreement(ours: dict, saved: Path, steps, rtol: float = 2e-3, atol: float = 2e-4) -> dict:
    """The peer's values (--save) against mi_jax's ({name: [time, member, ...]}, member 0):
    {"results_agree": bool, "worst_rel_diff": {measure, value}}."""
    with np.load(saved) as f:
        theirs = {k: f[k] for k in f.files}
    if not np.array_equal(theirs.pop("steps"), steps) or sorted(theirs) != sorted(ours):
        return {"results_agree": False, "agree_error": f"the peer measured {sorted(theirs)} at other steps"}
    rel = {k: float(np.abs(ours[k][:, 0] - theirs[k]).max() / max(np.abs(theirs[k]).max(), 1e-30)) for k in ours}
    worst = max(rel, key=rel.get)
    ok = all(np.allclose(ours[k][:, 0], theirs[k], rtol=rtol, atol=atol) for k in ours)
    return {"results_agree": bool(ok), "worst_rel_diff": {"measure": worst, "value": float(f"{rel[worst]:.3g}")}}


def lm_analysis(n_checkpoints: int = 200, loop_measured: int = 10, rounds: int = 3) -> dict:
    """Every language measure (`analysis.language.make_measures`: losses, ICL score, inductable and
    other loss, the four head scores, bigram and unigram KL, OV copying, composition) on a
    200-checkpoint series of language_attn_2l (its first 199 steps with a snapshot every step), as
    `mi-jax analyze` computes them: paired rounds of `vmapped_s` (one `analyze` call over the run's
    Trajectory, read from disk, compilation and the host-side OV eigenvalues included),
    `vmapped_cached_s` (a second call, its program from the on-disk compile cache) and the
    TransformerLens peer on the run's export (`benchmarks/peers/tl_lm_analysis.py`: load_file,
    load_state_dict and every measure in torch, per checkpoint), `tl_s`; speedups are medians of the
    per-round ratios. `loop_jit_s`: a loop calling one jitted function of all measures.
    `results_agree`: the peer's values equal mi_jax's at every checkpoint (rtol 2e-3, atol 2e-4)."""
    from mi_jax.analysis import induction as ind
    from mi_jax.analysis import language as lm
    from mi_jax.analysis.core import analyze, evaluate_measures
    from mi_jax.interop.transformer_lens import export_trajectory
    from mi_jax.runs.run import train
    from mi_jax.runs.trajectory import Trajectory

    if quick():
        n_checkpoints, loop_measured, rounds = 12, 3, 1
    cfg = override(load(PRESET), {"train.steps": str(n_checkpoints - 1), "train.ckpt_every": "1",
                                  "train.eval_every": "50"})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with environ(MI_JAX_COMPILE_CACHE="off"):  # `train` would turn JAX's compile cache on for the process
            train(cfg, folder / "run", wandb="off", progress=False)
        traj = Trajectory.load(folder / "run")
        assert len(traj.steps) == n_checkpoints, traj.steps
        with runtime.quiet():
            task = make_task(traj.config)
        measures, data = lm.make_measures(task), lm.probe_data(task)
        export_trajectory(traj, folder / "tl")
        data_file, saved = folder / "data.npz", folder / "tl_values.npz"
        np.savez(data_file, **{k: np.asarray(v) for k, v in data.items()}, early=cfg.early, late=cfg.late)
        results = {}

        def ours() -> dict:
            first, cached, results["vmapped"] = first_and_cached(lambda: ind.finish(analyze(traj, measures, data)))
            return {"first": first, "cached": cached}

        paired = paired_rounds(ours, PEER_SCRIPTS / "tl_lm_analysis.py",
                               ["--series", folder / "tl", "--data", data_file, "--threads", os.cpu_count(),
                                "--save", saved], rounds)
        head = jax.tree.map(lambda x: np.asarray(x[:loop_measured, 0]), traj.params)  # the loop's checkpoints
        jitted = jax.jit(lambda p: evaluate_measures(measures, p, data))
        loop_jit_s, looped = loop_seconds(lambda p: ind.finish(jitted(p)), head, n_checkpoints, loop_measured)
        vmapped = results["vmapped"]
        row = paired_figures(paired, {"first": "vmapped_s", "cached": "vmapped_cached_s"})
        check = {} if "peer_error" in row else _peer_agreement(vmapped, saved, traj.steps)
    solo = {k: v[:, 0] for k, v in vmapped.items()}
    return {"n_checkpoints": n_checkpoints, "n_measures": len(vmapped),
            "params": f"{PRESET}, steps 0-{n_checkpoints - 1}", **row, "loop_jit_s": round(loop_jit_s, 2), "loop_measured": loop_measured,
            "speedup_vs_jit_loop": round(loop_jit_s / row["vmapped_s"], 2),
            "jit_loop_agrees": agree(solo, looped, rtol=2e-3, atol=2e-4), **check}


# ----------------------------------------------------------------------------- lm_full_step


def model_flops_per_token(m, seq_len: int) -> float:
    """Training FLOPs per token of a transformer (PaLM, Chowdhery et al. 2022, app. B): 6 per weight of
    every matrix product (attention, MLP, unembedding; the embedding is a lookup) and 12 L H Q T for the
    attention scores and their weighted sum over a context of T, the causal mask saving nothing."""
    matrices = m.n_layers * 4 * m.d_model * m.n_heads * m.d_head + m.d_model * m.d_vocab_out
    if m.d_mlp is not None:
        matrices += m.n_layers * 2 * m.d_model * m.d_mlp
    return 6.0 * matrices + 12.0 * m.n_layers * m.n_heads * m.d_head * seq_len


def lm_full_step(n_chunks: int = 3) -> dict:
    """Tokens/s and MFU of language_attn_2l_full's training (TransformerLens's attn-only-2l size: d_model
    512, 8 heads, n_ctx 1,024, BPE 5,000, batch 32 windows, 32,768 tokens a step), in float32 (matmuls
    as the backend runs them: TF32 on a GPU) and with `train.compute_dtype=bfloat16`: after one
    compile-and-warm-up chunk of 100 steps (an evaluation at its end), `n_chunks` chunks timed;
    `compile_s` is the first chunk less a compiled one. MFU is the model's FLOP/s (`model_flops_per_token`,
    PaLM's count) over the card's dense peak where it is known (`bench_sweep.mfu`);
    `xla_gflop_per_step` is XLA's own count of one step, shown beside it: right on CPU, but on a GPU it
    leaves out most of the matrix products (152 GFLOP a step on an H200 where the model does 1,328).
    The accelerator row: on CPU it times one 2-step chunk of 1 window, a smoke test of the path."""
    from bench_sweep import mfu
    from bench_training import step_flops

    cfg = load("language_attn_2l_full")
    steps, batch = (100, cfg.train.batch_size) if jax.default_backend() != "cpu" else (2, 1)
    if quick() or jax.default_backend() == "cpu":
        n_chunks = 1
    kind = jax.devices()[0].device_kind
    row = {"device": kind, "batch_size": batch, "seq_len": cfg.seq_len, "d_model": cfg.transformer.d_model,
           "d_vocab": cfg.transformer.d_vocab, "steps_per_chunk": steps, "chunks": n_chunks}
    for dtype in ("float32", "bfloat16"):
        c = override(cfg, {"train.batch_size": str(batch), "train.compute_dtype": dtype,
                           "train.ckpt_every": str(steps), "train.eval_every": str(steps)})
        with runtime.quiet():
            task = make_task(c)
        trainer = Trainer(task, c.train)
        first, state = time_chunks(trainer, trainer.init_state(), 1, warm=False)
        seconds, _ = time_chunks(trainer, state, n_chunks, warm=False)
        step_s = seconds / (n_chunks * steps)
        flops = model_flops_per_token(c.transformer, c.seq_len) * batch * c.seq_len
        tflops = flops / step_s / 1e12
        row[dtype] = {"tokens_per_s": round(batch * c.seq_len / step_s), "ms_per_step": round(1e3 * step_s, 3),
                      "compile_s": round(first - steps * step_s, 2), "model_gflop_per_step": round(flops / 1e9, 1),
                      "xla_gflop_per_step": round(step_flops(task) / 1e9, 1), "achieved_tflops": round(tflops, 2),
                      **mfu(tflops, kind)}
        del trainer, state, task
    row["tokens_per_s"] = row["float32"]["tokens_per_s"]
    row["bf16_speedup"] = round(row["bfloat16"]["tokens_per_s"] / row["float32"]["tokens_per_s"], 2)
    return row


BENCHMARKS = {"lm_2l_step": lm_2l_step, "lm_store": lm_store, "lm_analysis": lm_analysis,
              "lm_full_step": lm_full_step}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "lm_2l_step": {"figure": "speedup_vs_transformer_lens", "at_least": 2, "mi_jax": "tokens_per_s",
                   "peer": "transformer_lens_tokens_per_s", "peer_name": "TransformerLens"},
    "lm_store": {"figure": "mi_jax_over_tokenizers", "mi_jax": "mi_jax_s",
                 "peer": "tokenizers_s", "peer_name": "tokenizers"},
    "lm_analysis": {"figure": "speedup_vs_transformer_lens", "at_least": 3, "mi_jax": "vmapped_s",
                    "peer": "tl_s", "peer_name": "TransformerLens"},
    "lm_full_step": {"figure": "bf16_speedup", "mi_jax": "tokens_per_s"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"lm_2l_step": "transformer_lens", "lm_analysis": "transformer_lens"}


if __name__ == "__main__":
    import json

    runtime.configure(compile_cache=False)  # as bench.py runs them
    for name in sys.argv[1:] or list(BENCHMARKS):
        t0 = time.perf_counter()
        row = {"name": name, **BENCHMARKS[name](), "bench_wall_s": round(time.perf_counter() - t0, 2)}
        print(json.dumps(row), flush=True)
