"""The language kind: corpus, tokenizer and token store, batches, the split, resume, and bad input."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import cli
from mi_jax import config as config_lib
from mi_jax.config import ConfigError
from mi_jax.io import corpus as corpus_lib
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.models.ops import cross_entropy
from mi_jax.runs.trajectory import load_config
from mi_jax.tasks import make_task
from mi_jax.tasks import language as lm
from mi_jax.training import loop
from mi_jax.trees import leaf_name

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


def test_stdlib_plus_tests_adds_the_stdlib_s_tests_and_nothing_installed():
    root, files = corpus_lib.stdlib_files()
    _, with_tests = corpus_lib.stdlib_files(tests=True)
    added = {p.relative_to(root).as_posix() for p in with_tests} - {p.relative_to(root).as_posix() for p in files}
    assert set(files) < set(with_tests) and len(with_tests) > 2 * len(files)
    assert all("/test/" in f"/{n}" or "/tests/" in f"/{n}" or "/idle_test/" in f"/{n}"
               or n.split("/")[-1].startswith("test_") for n in added)
    assert not [n for n in added if "site-packages/" in n or "__pycache__/" in n]
    assert lm.DataConfig(source="stdlib+tests").source == "stdlib+tests"  # a name, not made a path


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
    key, shared = jax.random.key(0), task.shared_data
    batch = jax.jit(task.batch)
    a, b = batch(key, 7, shared), batch(key, 7, shared)
    assert a.shape == (8, 17) and a.dtype == np.int32 and np.array_equal(a, b)
    assert np.array_equal(a, task.batch(key, 7, shared))  # jitted or not
    assert not np.array_equal(a, batch(key, 8, shared)) and not np.array_equal(a, batch(jax.random.key(1), 7, shared))
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
    cfg = tiny_language(chunk_steps=10, data_parallel=True)  # the batch split over 2 devices, the stream on both
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


def test_a_model_that_is_the_bigram_table_has_a_bigram_distance_of_zero():
    # one attention-only layer whose heads write nothing, one-hot embeddings and W_U = log p(b | a): at
    # a one-token context the model's prediction is exactly the stream's bigram row
    from mi_jax.analysis import language as measures

    vocab = 6
    rng = np.random.default_rng(0)  # a Markov chain over tokens 0..4 (token 5 never occurs): mostly a -> a + 1
    stream = np.cumsum(np.where(rng.random(5000) < 0.8, 1, rng.integers(0, 5, 5000))) % 5
    stats = measures.ngram_statistics(stream, vocab)
    model = mj.TransformerConfig(n_layers=1, d_model=vocab, n_heads=1, d_mlp=None, n_ctx=4, d_vocab=vocab)
    params = jax.tree.map(np.zeros_like, mj.init_params(model, jax.random.key(0)))
    params["W_E"] = np.eye(vocab, dtype=np.float32)
    params["W_U"] = np.log(np.maximum(stats["bigram"], 1e-30)).astype(np.float32)
    distances = measures.ngram_distances(params, stats, model)
    assert abs(float(distances["bigram_kl"])) < 1e-5
    assert float(distances["unigram_kl"]) > 0.01  # the bigram rows are not the unigram
    params["W_U"] = np.zeros_like(params["W_U"])  # uniform prediction: KL = entropy gap, > 0
    assert float(measures.ngram_distances(params, stats, model)["bigram_kl"]) > 0.1


def test_context_gain_is_zero_for_a_model_that_reads_only_the_previous_token():
    from mi_jax.analysis import language as measures

    task = make_task(tiny_language())
    data = {k: np.asarray(v) for k, v in measures.probe_data(task).items()}
    losses = measures.make_measures(task)["text"]
    params = task.init_params(jax.random.key(0))
    assert abs(float(losses(params, data)["context_gain"])) > 1e-4  # at init the heads and positions move the logits
    silenced = lambda path, x: np.zeros_like(x) if leaf_name(path).split(".")[-1] in ("W_pos", "W_O") else x  # noqa: E731
    # no positions, heads that write nothing: each token's prediction is its bigram row
    params = jax.tree_util.tree_map_with_path(silenced, params)
    assert abs(float(losses(params, data)["context_gain"])) < 1e-5


def test_repeated_text_scores_a_copying_head_and_a_model_that_copies_nothing():
    from mi_jax.analysis import language as measures
    from mi_jax.models import transformer as tfm
    import jax.numpy as jnp

    task = make_task(tiny_language())
    data = {k: np.asarray(v) for k, v in measures.probe_data(task).items()}
    text = data["repeated_text"]
    half = task.cfg.seq_len // 2
    assert text.shape == (task.cfg.n_eval, task.cfg.seq_len)
    np.testing.assert_array_equal(text[:, :half], text[:, half:])
    np.testing.assert_array_equal(text[:, :half], task.eval_tokens[:, :half])
    repeated = measures.make_measures(task)["text"]
    # every weight zero: uniform predictions (no gap between the copies) and uniform causal attention
    params = jax.tree.map(np.zeros_like, task.init_params(jax.random.key(0)))
    out = repeated(params, data)
    assert abs(float(out["repeat_loss_gap"])) < 1e-5
    uniform = np.mean(1.0 / (np.arange(half, 2 * half) + 1))
    np.testing.assert_allclose(np.asarray(out["text_induction"]), uniform, rtol=1e-5)
    assert out["text_induction"].shape == (2, 2)  # [layer, head]
    # the first copy is the validation pass (its loss, keys and values): the gap equals a single pass's
    params = task.init_params(jax.random.key(1))
    logits, _ = tfm.apply(params, jnp.asarray(text), task.model)
    loss = np.asarray(cross_entropy(logits[:, :-1], jnp.asarray(text[:, 1:])))
    one_pass = loss[:, half:].mean() - loss[:, : half - 1].mean()
    assert abs(one_pass) > 1e-3
    np.testing.assert_allclose(float(repeated(params, data)["repeat_loss_gap"]), one_pass, rtol=1e-4, atol=1e-6)


def test_the_onset_of_copying_is_where_the_repeat_gap_stays_below_the_threshold():
    from mi_jax.analysis.language import COPYING, steps_to_copying

    steps = np.arange(0, 700, 100)
    below = -COPYING - 0.01
    # one noisy early dip (step 100) does not count: the onset is where the gap stays below
    assert steps_to_copying(steps, [0.0, below, -0.02, -0.05, below, below, -0.3]) == 400
    assert steps_to_copying(steps, [below] * 7) == 0
    assert steps_to_copying(steps, [0.0, below, below, below, below, below, -0.05]) is None  # lost by the end
    assert steps_to_copying(steps, [-COPYING + 0.01] * 7) is None


def test_inductable_tokens_are_those_whose_bigram_occurred_earlier():
    from mi_jax.analysis.language import inductable

    window = np.array([[1, 2, 3, 1, 2, 4, 1, 2, 3]])
    # labels 2 3 1 2 4 1 2 3 with their bigrams (1,2) (2,3) (3,1) (1,2) (2,4) (4,1) (1,2) (2,3)
    assert inductable(window).tolist() == [[False, False, False, True, False, False, True, True]]


@pytest.mark.slow  # an ensemble run and its whole report; the default suite keeps the measures' own tests
def test_the_report_runs_end_to_end_on_the_tiny_corpus(tmp_path):
    run = tmp_path / "run"
    mj.train(tiny_language(seeds=(0, 1), data_parallel=True), run, wandb="off", progress=False)  # shared data on 2 devices
    lines = mj.analyze_run(run, wandb="off")
    summary = json.loads((run / "analysis" / "language_summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [0, 1]
    for member in summary["members"]:
        assert member["bigram_kl"]["final"] < member["bigram_kl"]["start"]  # it learns the bigrams first
        assert member["induction_head"].startswith("L1H") and member["previous_token_head"].startswith("L0H")
        assert isinstance(member["induction_formed"], bool)
        assert member["text_induction"]["head"].startswith("L1H") and "final" in member["repeat_loss_gap"]
        onset = member["steps_to_induction"]
        assert member["tokens_to_induction"] == (None if onset is None else onset * 8 * 16)  # batch x seq_len
    results = np.load(run / "analysis" / "language.npz")
    assert results["position_loss"].shape == (5, 2, 16) and results["induction"].shape == (5, 2, 2, 2)
    for name in ("language_loss.png", "language_stages.png", "language_head_scores_seed1.png"):
        assert (run / "analysis" / name).stat().st_size > 10_000
    assert any("bigram KL" in line for line in lines)


@pytest.mark.slow  # an LLC run, a sweep and a patching series: ~1 min on 2 cores
def test_the_llc_a_sweep_and_patching_over_training_work_on_a_language_run(tmp_path, capsys):
    from mi_jax.interventions import head_patching_measure
    from mi_jax.io.results import load_results
    from test_cli import run_cli
    from test_llc_report import SMALL

    run = tmp_path / "run"
    mj.train(tiny_language(), run, wandb="off", progress=False)
    code, out, err = run_cli(capsys, "llc", str(run), *SMALL)
    assert code == 0, err
    _, results = load_results(run / "analysis" / "llc.npz")
    assert results["llc_mean"].shape == (5, 1) and np.isfinite(results["llc_mean"]).all()

    sweep = mj.sweep(tiny_language(steps=20), {"train.lr": [1e-3, 3e-3]}, tmp_path / "sweep", wandb="off",
                     progress=False, one_program=True)
    losses = [np.asarray(t.metrics["test_loss"])[-1] for t in sweep.trajectories]
    assert np.concatenate(losses).shape == (2,) and len(set(np.concatenate(losses).round(6))) == 2
    mj.analyze_run(tmp_path / "sweep", wandb="off")  # each member's onset of copying, against the grid
    rows = json.loads((tmp_path / "sweep" / "analysis" / "sweep_summary.json").read_text())["members"]
    assert [r["train.lr"] for r in rows] == [1e-3, 3e-3] and all("tokens_to_induction" in r for r in rows)
    assert (tmp_path / "sweep" / "analysis" / "sweep_tokens_to_induction.png").stat().st_size > 0

    # head patching over the series, clean = a validation window, corrupted = its first half shuffled
    traj, task = mj.Trajectory.load(run), make_task(tiny_language())
    clean = task.eval_tokens[:4, :-1]
    corrupted = np.concatenate([clean[:, ::-1][:, : 8], clean[:, 8:]], axis=1)
    measure = head_patching_measure(task.model, clean, corrupted, answer=task.eval_tokens[:4, -1], metric="logprob")
    patched = mj.analyze(traj, {"patching": measure})["head_patching"]
    assert patched.shape == (5, 1, 2, 2) and np.isfinite(patched).all()


@pytest.mark.slow  # two runs and a fine-tune; tests/test_finetune.py covers --init-from in the default suite
def test_a_language_fine_tune_needs_its_bases_tokenizer(tmp_path, capsys):
    base = tmp_path / "base"
    mj.train(tiny_language(steps=10), base, wandb="off", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("Plain prose about rivers and gardens, written for the fine-tune. " * 40)
    (other / "more.txt").write_text("A second document, so that a validation split exists. " * 40)
    argv = ["train", "language_attn_1l", "--out", str(tmp_path / "ft"), "--init-from", str(base), "--wandb", "off",
            "--quiet", "--set", f"data.source={other}", "--set", "seq_len=16", "--set", "model.d_model=32",
            "--set", "model.n_heads=2", "--set", "model.d_head=16", "--set", "model.n_layers=2", "--set", "train.steps=4",
            "--set", "train.batch_size=8", "--set", "data.vocab_size=300"]
    assert_one_line_error(capsys, argv, "that run has another tokenizer")
    code = cli.main(argv + ["--set", f"data.tokenizer={base / 'tokenizer.json'}"])
    assert code == 0
    traj = mj.Trajectory.load(tmp_path / "ft")
    assert list(traj.steps) == [10, 14] and traj.init_from["step"] == 10


@pytest.mark.parametrize("name", ["language_attn_1l_full", "language_attn_2l_full", "language_gelu_1l_full",
                                  "language_gelu_2l_full"])
def test_the_full_size_presets_have_transformer_lens_s_toy_lm_shapes(name):
    # attn-only-1l/2l and gelu-1l/2l: d_model 512, 8 heads of 64, context 1,024, layer norm; gelu's MLP 2,048
    cfg = mj.load_preset(name)
    m = cfg.model
    assert (m.d_model, m.n_heads, m.d_head, cfg.seq_len, m.layer_norm) == (512, 8, 64, 1024, True)
    assert m.n_layers == int(name.split("_")[2][0])
    assert m.d_mlp == (2048 if "gelu" in name else None) and ("gelu" not in name or m.act_fn == "gelu")
