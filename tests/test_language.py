"""The language kind: corpus, tokenizer and token store, batches, the split, resume, and bad input."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import config as config_lib
from mi_jax.config import ConfigError
from mi_jax.io import corpus as corpus_lib
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.runs.trajectory import load_config
from mi_jax.tasks import make_task
from mi_jax.tasks import language as lm
from mi_jax.training import loop

from test_cli import assert_one_line_error

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny_corpus"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test builds its tokenizers and stores in a cache of its own."""
    monkeypatch.setenv("MI_JAX_CACHE", str(tmp_path / "cache"))


def tiny_language(source=TINY, tokenizer="bpe", **train) -> lm.LanguageConfig:
    return lm.LanguageConfig(
        data=lm.DataConfig(source=str(source), tokenizer=tokenizer, vocab_size=300, val_fraction=0.25),
        seq_len=16, n_eval=8,
        model=mj.TransformerConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=None, layer_norm=True),
        train=mj.TrainConfig(**{"steps": 40, "lr": 3e-3, "weight_decay": 0.0, "batch_size": 8, "eval_every": 10,
                                "ckpt_every": 10, "seed": 0, **train}),
    )


def test_the_corpus_reads_text_files_and_jsonl_lines_in_path_order():
    corpus = corpus_lib.read_corpus(str(TINY))
    assert corpus.names == ("garden.txt", "notes/counting.py", "notes/letters.jsonl:1", "notes/letters.jsonl:2",
                            "notes/letters.jsonl:3", "notes/letters.jsonl:4", "river.md")
    assert corpus.texts[0].startswith("The garden behind the station")
    assert corpus.identity["documents"] == 7 and corpus.identity["files"] == 4  # the .csv is not text
    assert corpus_lib.read_corpus(str(TINY)).content_hash == corpus.content_hash


def test_the_stdlib_corpus_is_the_interpreters_source_without_its_tests():
    root, files = corpus_lib.stdlib_files()
    names = [p.relative_to(root).as_posix() for p in files]
    assert "json/decoder.py" in names and "collections/__init__.py" in names
    assert not [n for n in names if "/test/" in f"/{n}" or n.split("/")[-1].startswith("test_")]
    assert len(names) > 300


@pytest.mark.parametrize("kind", ["bpe", "bytes"])
def test_the_tokenizer_round_trips(kind):
    corpus = corpus_lib.read_corpus(str(TINY))
    tokenizer = corpus_lib.load_tokenizer(corpus, kind, 300)
    assert tokenizer.get_vocab_size() == (300 if kind == "bpe" else 257)
    assert tokenizer.token_to_id(corpus_lib.BOS) == 0
    for text in (*corpus.texts, "naïve café ≠ 漢字 \t\n  two  spaces\r\n"):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text
    if kind == "bpe":
        assert len(tokenizer.encode(corpus.texts[0]).ids) < len(corpus.texts[0].encode()) / 1.5


def test_the_store_is_rebuilt_when_the_corpus_changes_and_reused_when_it_does_not(tmp_path):
    folder = tmp_path / "corpus"
    shutil.copytree(TINY, folder)
    corpus = corpus_lib.read_corpus(str(folder))
    tokenizer = corpus_lib.load_tokenizer(corpus, "bytes", 0)
    store = corpus_lib.token_store(corpus, tokenizer, progress=False)
    built = (store.path / "tokens.npy").stat().st_mtime_ns
    assert store.tokens.dtype == np.uint16 and store.n_documents == 7
    assert all(store.tokens[store.offsets[i]] == 0 for i in range(7))  # BOS starts every document
    first = store.tokens[store.offsets[0] + 1:store.offsets[1]]
    assert len(first) == len(corpus.texts[0].encode()) and tokenizer.decode(first.tolist()) == corpus.texts[0]

    again = corpus_lib.token_store(corpus_lib.read_corpus(str(folder)), tokenizer, progress=False)
    assert again.path == store.path and (again.path / "tokens.npy").stat().st_mtime_ns == built

    with open(folder / "garden.txt", "a") as f:
        f.write("The fig tree is still there.\n")
    changed = corpus_lib.token_store(corpus_lib.read_corpus(str(folder)), tokenizer, progress=False)
    assert changed.path != store.path and len(changed.tokens) == len(store.tokens) + len("The fig tree is still there.\n")


def test_no_validation_document_reaches_a_training_window():
    task = make_task(tiny_language())
    s = task.streams
    assert not set(s.train_documents) & set(s.validation_documents)
    assert len(s.train_documents) + len(s.validation_documents) == s.store.n_documents
    # the training stream is the training documents end to end, and a window starts where it fits whole
    assert np.array_equal(s.train, s.store.documents(s.train_documents))
    assert np.array_equal(s.validation, s.store.documents(s.validation_documents))
    starts = np.asarray(lm.window_starts(jax.random.key(3), 10_000, len(s.train), task.cfg.seq_len + 1))
    assert starts.min() == 0 and starts.max() == len(s.train) - task.cfg.seq_len - 1


def test_batches_are_a_pure_function_of_seed_and_step():
    task = make_task(tiny_language())
    key = jax.random.key(0)
    batch = jax.jit(task.batch)
    a, b = batch(key, 7), batch(key, 7)
    assert a.shape == (8, 17) and a.dtype == np.int32 and np.array_equal(a, b)
    assert np.array_equal(a, task.batch(key, 7))  # jitted or not
    assert not np.array_equal(a, batch(key, 8)) and not np.array_equal(a, batch(jax.random.key(1), 7))
    # every window is a slice of the training stream
    stream = task.streams.train.astype(np.int32)
    for window in np.asarray(a):
        hits = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(stream, 17) == window, axis=1))
        assert len(hits) >= 1


def test_the_icl_score_and_the_loss_per_position_on_a_hand_built_model():
    # a model with zero weights predicts uniformly: loss ln(vocab) at every position, ICL score 0
    task = make_task(tiny_language())
    params = jax.tree.map(np.zeros_like, task.init_params(jax.random.key(0)))
    loss = lm.window_loss(params, task.eval_tokens, task.model)
    assert loss.shape == (8, 16)
    np.testing.assert_allclose(loss, np.log(task.model.d_vocab), rtol=1e-6)
    position_loss = np.arange(16.0)
    assert lm.icl_score(position_loss, 2, 10) == 8.0  # token t's loss is entry t - 1
    metrics = task.evaluate(params)
    np.testing.assert_allclose(metrics["test_loss"], np.log(300), rtol=1e-6)
    assert abs(float(metrics["icl_score"])) < 1e-5


def test_a_run_keeps_its_tokenizer_and_corpus_and_a_killed_run_resumes_bit_identically(tmp_path):
    cfg = tiny_language(chunk_steps=10)
    whole = tmp_path / "whole"
    mj.train(cfg, whole, wandb="off", progress=False)
    identity = json.loads((whole / "corpus.json").read_text())
    assert identity["sha256"] == corpus_lib.read_corpus(str(TINY)).content_hash and identity["vocab_size"] == 300
    tokenizer = corpus_lib.parse_tokenizer((whole / "tokenizer.json").read_text(), "run")
    assert tokenizer.decode(tokenizer.encode("def count_words(text):").ids) == "def count_words(text):"
    assert isinstance(load_config(whole), lm.LanguageConfig)

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / run_dir_lib.CONFIG).write_text(config_lib.dumps(cfg))
    loop.train_task(make_task(cfg), cut, progress=False, stop_after_chunks=2)
    assert mj.Trajectory.load(cut).steps[-1] < 40
    mj.resume(cut, wandb="off", progress=False)
    a, b = mj.Trajectory.load(cut, on_corrupt="raise"), mj.Trajectory.load(whole)
    assert list(a.steps) == list(b.steps) == [0, 10, 20, 30, 40]
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert np.array_equal(x, y)
    losses = np.asarray(b.metrics["test_loss"])[:, 0]
    assert losses[-1] < losses[0] - 0.5, losses  # it learns the text


def test_a_corpus_above_the_memory_budget_is_one_line():
    with pytest.raises(ConfigError, match=r"above data.max_tokens=100 \(the memory budget"):
        make_task(dataclasses.replace(tiny_language(), data=dataclasses.replace(tiny_language().data, max_tokens=100)))


def test_bad_corpora_and_tokenizers_are_one_line_each(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.csv").write_text("1,2\n")
    short = tmp_path / "short"
    short.mkdir()
    for i in range(3):
        (short / f"{i}.txt").write_text("tiny")
    broken = tmp_path / "broken.json"
    broken.write_text("{not a tokenizer")
    base = ["train", "language_attn_1l", "--out", str(tmp_path / "run"), "--wandb", "off", "--quiet",
            "--set", "data.vocab_size=300"]
    cases = [
        (["--set", f"data.source={tmp_path / 'nowhere'}"], "no such file or folder"),
        (["--set", f"data.source={empty}"], "has no text"),
        (["--set", f"data.source={short}", "--set", "data.tokenizer=bytes"], "fewer than one window"),
        (["--set", f"data.source={TINY}", "--set", f"data.tokenizer={broken}"], "does not parse"),
        (["--set", "data.vocab_size=5000000000"], "too large"),
    ]
    for extra, match in cases:
        assert_one_line_error(capsys, base + extra, match)
    assert not (tmp_path / "run").exists()
