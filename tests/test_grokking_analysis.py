"""The grokking progress measures (Nanda et al. 2023) on small p: Fourier tools, a hand-built
transformer that runs the trig algorithm, and the trajectory / ensemble analysis in one call."""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.analysis import fourier, grokking
from mi_jax.analysis.core import analyze_params, evaluate_measures
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.models import fast
from mi_jax.models import transformer as tfm
from mi_jax.tasks.grokking import label_nll

TINY_MODEL = mj.TransformerConfig(d_model=32, n_heads=4, d_mlp=64)
TINY_TRAIN = mj.TrainConfig(steps=200, lr=3e-3, weight_decay=1.0, beta2=0.98, eval_every=50, ckpt_every=50,
                         freeze_biases=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = mj.GrokkingConfig(p=13, train_frac=0.5, model=TINY_MODEL, train=TINY_TRAIN)
    path = tmp_path_factory.mktemp("runs") / "solo"
    mj.train(cfg, path, wandb="off", progress=False)
    return path


@pytest.fixture(scope="module")
def tiny_ensemble(tmp_path_factory):
    cfg = mj.GrokkingConfig(p=13, train_frac=0.5, model=TINY_MODEL, train=dataclasses.replace(TINY_TRAIN, seeds=(0, 1)))
    path = tmp_path_factory.mktemp("runs") / "ensemble"
    mj.train(cfg, path, wandb="off", progress=False)
    return path


# ----------------------------------------------------------------------------- Fourier tools


@pytest.mark.parametrize("p", [12, 13, 17])
def test_fourier_basis_is_orthonormal_and_labelled(p):
    F = fourier.basis(p)
    np.testing.assert_allclose(F @ F.T, np.eye(p), atol=1e-12)
    freqs = fourier.freq_of_component(p)
    assert freqs[0] == 0 and sorted(set(freqs[1:])) == list(range(1, p // 2 + 1))
    x = np.arange(p)
    k = 3
    assert np.allclose(F[fourier.component_names(p).index(f"sin {k}")], np.sqrt(2 / p) * np.sin(2 * np.pi * k * x / p))


def test_freq_norms_of_a_pure_wave_sit_at_its_frequency():
    p, k = 17, 5
    x = np.arange(p)
    M = np.stack([np.cos(2 * np.pi * k * x / p + 0.3), 2 * np.sin(2 * np.pi * k * x / p)], axis=1)  # [x, 2]
    norms = np.asarray(fourier.freq_norms(M, fourier.basis(p), fourier.freq_indicator(p)))
    assert norms.argmax() == k - 1
    np.testing.assert_allclose(norms[k - 1], np.linalg.norm(M), rtol=1e-6)  # all of it (no constant part)
    assert np.delete(norms, k - 1).max() < 1e-6


def test_label_nll_keeps_its_digits_at_tiny_and_huge_losses():
    """-log p(label) to float32's relative precision, checked against float64 on the same float32 logits:
    losses of 1e-12..1e-3 (where logsumexp - x_label in float32 is 0 or noise), a label 500 below the top,
    and a tie for the top."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5])
    for row, margin in enumerate([28.0, 20.0, 12.0, 5.0]):  # the label above the rest by `margin`
        logits[row, labels[row]] = logits[row].max() + margin
    logits[4, 4] = logits[4].max() - 500.0
    logits[5, [5, 9]] = logits[5].max() + 3.0  # the label ties with class 9 at the top
    x = logits.astype(np.float64)
    others = np.exp(x - x[np.arange(6), labels][:, None])  # e^(x_c - x_label), at most e^~510: no overflow
    others[np.arange(6), labels] = 0
    want = np.log1p(others.sum(1))
    got = np.asarray(jax.jit(label_nll)(logits, labels))
    assert want[0] < 1e-10 and want[3] > 1e-4 and want[4] > 499 and want[5] > np.log(2)
    np.testing.assert_allclose(got, want, rtol=2e-6)


@pytest.mark.parametrize("p, offset, scale", [(12, 0, 1), (13, 0, 1), (13, 100, 1e-3)])
def test_neuron_fractions_equal_the_real_basis_definition(p, offset, scale):
    """The DFT shortcut equals Nanda et al.'s definition: energy in {const, cos k, sin k}² blocks of F A F^T;
    also for near-constant neurons (offset 10^5 times their spread), whose centring must cancel nothing."""
    data = grokking.make_data(mj.GrokkingConfig(p=p))
    acts = (offset + scale * np.random.default_rng(0).normal(size=(p * p, 7))).astype(np.float32)
    got = np.asarray(grokking.neuron_freq_fractions(acts, data, p))
    F, freqs = fourier.basis(p), fourier.freq_of_component(p)
    grid = acts.reshape(p, p, -1).astype(np.float64)  # the float32 activations, exactly
    grid = grid - grid.mean((0, 1))
    power = np.einsum("ia,jb,abn->ijn", F, F, grid) ** 2
    want = np.stack([power[np.isin(freqs, [0, k])][:, np.isin(freqs, [0, k])].sum((0, 1))
                     for k in range(1, p // 2 + 1)]) / power.sum((0, 1))
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("p", [13, 14])
def test_key_wave_projection_equals_the_dense_projection(p):
    """Π_K x through residue sums equals projecting on the dense unit pair waves cos/sin(w_k(a+b))."""
    cfg = mj.GrokkingConfig(p=p, model=TINY_MODEL)
    keys = (2, p // 2)  # p // 2 is the Nyquist frequency for even p (no sine wave)
    data = grokking.make_data(cfg, keys)
    a, b = data["tokens"][:, 0], data["tokens"][:, 1]
    waves = []
    for k in keys:
        for trig in (np.cos, np.sin):
            wave = trig(2 * np.pi * k * (a + b) / p)
            if np.linalg.norm(wave) > 1e-6:
                waves.append(wave / np.linalg.norm(wave))
    W = np.stack(waves, axis=1)  # [pair, n_waves], orthonormal
    x = np.random.default_rng(0).normal(size=(p * p, 5)).astype(np.float32)
    want = W @ (W.T @ x)
    got = grokking.key_wave_component(jax.numpy.asarray(x), data, jax.numpy.asarray(data["key_mask"]))
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert len(waves) == (3 if p % 2 == 0 else 4)


def test_gini_is_maximal_for_one_hot_and_zero_for_uniform():
    n = 56
    one_hot = np.zeros(n, np.float32)
    one_hot[7] = 3.0
    assert float(grokking.gini(one_hot)) == pytest.approx((n - 1) / n)
    assert float(grokking.gini(np.full(n, 0.4, np.float32))) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(20):  # any other non-negative vector lies in between
        g = float(grokking.gini(rng.exponential(size=n).astype(np.float32)))
        assert 0 < g < (n - 1) / n


# ----------------------------------------------------------------------------- the trig algorithm by hand


def trig_transformer(p: int, keys: tuple[int, ...], phases: int = 8, amplitude: float = 6.0):
    """A one-layer transformer whose weights implement the trig algorithm for a + b mod p.

    W_E writes cos/sin(w_k a); head 0 (head 1) attends from `=` to position 0 (1) only and copies
    them into slots X (Y); neuron (k, i, j) computes ReLU(cos(w_k a - θ_i) + cos(w_k b - φ_j)) on a
    grid of phases θ_i, φ_j; W_out W_U reads it as cos(θ_i + φ_j - w_k c). Summed over the grid,
    only the (1, 1) harmonic of the ReLU survives (up to aliasing at order `phases`):
    logit(c) ∝ Σ_k cos(w_k(a + b - c)).
    """
    K = len(keys)
    T, X, Y, O, P = 0, 2 * K, 4 * K, 6 * K, 8 * K
    d_model = P + 3 + (P + 3) % 2
    cfg = mj.GrokkingConfig(p=p, model=tfm.TransformerConfig(d_model=d_model, n_heads=2, d_head=2 * K,
                                                         d_mlp=K * phases**2))
    tc = cfg.transformer
    params = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), tfm.init_params(tc, jax.random.key(0)))
    tok, c = np.arange(p), np.arange(p)
    for j, k in enumerate(keys):
        w = 2 * np.pi * k / p
        params["W_E"][:p, T + 2 * j], params["W_E"][:p, T + 2 * j + 1] = np.cos(w * tok), np.sin(w * tok)
        params["W_U"][O + 2 * j], params["W_U"][O + 2 * j + 1] = np.cos(w * c), np.sin(w * c)
    params["W_pos"][[0, 1, 2], [P, P + 1, P + 2]] = 1
    attn = params["blocks"][0]["attn"]
    for h, slot in ((0, X), (1, Y)):
        attn["W_Q"][h, P + 2, 0] = 1.0
        attn["W_K"][h, P + h, 0] = 60.0 * np.sqrt(2 * K)  # scores 60 apart: one-hot attention
        attn["W_V"][h, T : T + 2 * K] = np.eye(2 * K)
        attn["W_O"][h, :, slot : slot + 2 * K] = np.eye(2 * K)
    mlp = params["blocks"][0]["mlp"]
    angles = 2 * np.pi * np.arange(phases) / phases
    n = 0
    for j in range(K):
        for theta in angles:
            for phi in angles:
                mlp["W_in"][[X + 2 * j, X + 2 * j + 1, Y + 2 * j, Y + 2 * j + 1], n] = [
                    np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)]
                mlp["W_out"][n, [O + 2 * j, O + 2 * j + 1]] = [np.cos(theta + phi), np.sin(theta + phi)]
                n += 1
    # scale so that each frequency's logit wave has the given amplitude
    logits, _ = jax.jit(grokking.grid_forward, static_argnums=(1, 2))(params, tc, p)
    mlp["W_out"] *= amplitude / float(np.abs(logits).max() / K)
    return cfg, params


@functools.lru_cache(maxsize=4)
def all_measures_jitted(cfg: mj.GrokkingConfig):
    """One compiled evaluation of every measure per config, shared by the tests (data is an argument)."""
    return jax.jit(lambda P, D: evaluate_measures(grokking.measures(cfg), P, D))


def scalar_measures(cfg, params, data) -> dict:
    return {k: float(v) for k, v in all_measures_jitted(cfg)(params, data).items() if np.ndim(v) == 0}


def test_hand_built_trig_transformer_relies_on_its_key_frequencies():
    p, keys = 17, (2, 5, 7)
    cfg, params = trig_transformer(p, keys)
    data = grokking.make_data(cfg)
    energy = np.asarray(jax.jit(grokking.measures(cfg, ["logit_freq_energy"])["logit_freq_energy"])(params, data))
    assert energy[[k - 1 for k in keys]].sum() > 0.99  # the logits are the a+b-c waves, nothing else
    found = grokking.key_frequencies(energy)
    assert tuple(found) == keys
    values = scalar_measures(cfg, params, grokking.make_data(cfg, found))
    assert values["train_acc"] == 1.0 and values["test_acc"] == 1.0
    # keeping only the circuit changes the loss little; removing it leaves chance level (log p) or worse
    assert values["restricted_loss"] == pytest.approx(values["train_loss"], rel=0.1)
    assert values["restricted_loss_abc"] == pytest.approx(values["train_loss"], rel=0.1)
    assert values["excluded_loss"] > 0.95 * np.log(p) > 20 * values["train_loss"]
    n_freqs = p // 2  # K equal norms among n frequencies, the rest 0: Gini = 1 - K/n
    assert values["embed_gini"] == pytest.approx(1 - len(keys) / n_freqs, abs=1e-3)
    assert values["logit_map_gini"] == pytest.approx(1 - len(keys) / n_freqs, abs=1e-3)
    fracs = np.asarray(jax.jit(lambda P: grokking.neuron_freq_fractions(
        fast.grid_forward(P, cfg.transformer, p)[1], data, p))(params))  # [freq, neuron]
    built_for = np.repeat(keys, cfg.transformer.d_mlp // len(keys))  # neurons were built in blocks per key
    np.testing.assert_array_equal(fracs.argmax(0) + 1, built_for)
    assert fracs.max(0).min() > 0.9  # the rest is ReLU harmonics (2k, 3k, ...)


def test_restricting_to_the_key_frequencies_removes_a_harmful_one():
    """"Ablating everything else improves the loss": neurons of frequency 7 that vote against the
    answer raise the full loss; the restricted loss (keys 2, 5) drops them and is lower, and it
    does so for both definitions (neuron waves and logit a+b-c waves)."""
    p, keys = 17, (2, 5, 7)
    cfg, params = trig_transformer(p, keys)  # the model above (same shapes: its compiled measures)
    per_key = cfg.transformer.d_mlp // len(keys)
    params["blocks"][0]["mlp"]["W_out"][2 * per_key :] *= -0.5  # frequency 7's neurons now vote against
    values = scalar_measures(cfg, params, grokking.make_data(cfg, keys[:2]))
    assert values["train_loss"] > 2 * values["restricted_loss"]
    assert values["train_loss"] > 2 * values["restricted_loss_abc"]
    assert values["excluded_loss"] > values["train_loss"]


def test_phase_boundaries_on_a_synthetic_grokking_curve():
    steps = np.arange(0, 1000, 10)
    train_acc = np.where(steps >= 100, 1.0, steps / 100)
    test_loss = np.where(steps < 500, 5.0, 5.0 * np.exp(-(steps - 500) / 30.0))
    test_acc = np.where(steps >= 700, 1.0, 0.1)
    got = grokking.phase_boundaries(steps, train_acc, test_acc, test_loss)
    assert got["memorised"] == 100 and got["generalised"] == 700
    assert 500 < got["cleanup"] < 560
    assert grokking.phase_boundaries(steps, train_acc * 0.5, test_acc, test_loss)["memorised"] is None


# ----------------------------------------------------------------------------- whole trajectories


def test_one_call_equals_each_checkpoint_alone(tiny_run):
    traj = mj.Trajectory.load(tiny_run)
    results, keys = grokking.progress_measures(traj)
    assert len(traj) == 5 and set(results) == set(grokking.measures(traj.config))
    assert all(v.shape[:2] == (5, 1) for v in results.values())  # [time, member]
    results = {k: v[:, 0] for k, v in results.items()}
    measures = grokking.measures(traj.config)
    data = grokking.make_data(traj.config, keys[0])
    one = jax.jit(lambda p: evaluate_measures(measures, p, data))
    fracs = jax.jit(lambda p: grokking.neuron_freq_fractions(fast.grid_forward(p, traj.config.transformer, 13)[1], data, 13))
    for t in range(len(traj)):
        alone = one(traj.at(t))
        for name, value in alone.items():
            if name == "neuron_best_freq":  # an argmax: near-ties may flip, so check it attains the max
                f = np.asarray(fracs(traj.at(t)))
                chosen = f[results[name][t] - 1, np.arange(f.shape[1])]
                np.testing.assert_allclose(chosen, f.max(0), atol=1e-5, err_msg=f"{name} at t={t}")
                continue
            np.testing.assert_allclose(results[name][t], value, rtol=2e-5, atol=2e-6, err_msg=f"{name} at t={t}")


def test_neuron_fractions_split_over_devices_equal_each_checkpoint_alone():
    # Regression: with lax.map's batch-of-one form inside the program split over the 2 test devices,
    # the FFT-based neuron fractions of a model this size came out as garbage (up to 1e33), run to run different.
    cfg = mj.GrokkingConfig(p=37, train_frac=0.5, model=tfm.TransformerConfig(d_model=32, n_heads=4, d_mlp=256))
    stacked = jax.vmap(lambda k: tfm.init_params(cfg.transformer, k))(jax.random.split(jax.random.key(0), 4))
    measures, data = grokking.measures(cfg, ["neuron_best_frac"]), grokking.make_data(cfg, key_freqs=(1, 2))
    split = analyze_params(stacked, measures, data, member_axis=False)["neuron_best_frac"]
    one = jax.jit(lambda p: evaluate_measures(measures, p, data)["neuron_best_frac"])
    for t in range(4):
        np.testing.assert_allclose(split[t], one(jax.tree.map(lambda x: x[t], stacked)), rtol=1e-5, atol=1e-6)


def test_ensemble_measures_equal_per_seed_runs(tiny_ensemble):
    ens = mj.Trajectory.load(tiny_ensemble)
    results, keys = grokking.progress_measures(ens)
    assert results["train_loss"].shape == (len(ens), 2)
    for i in range(ens.n_members):
        solo = ens.select_members([i])
        solo = dataclasses.replace(solo, config=ens.member_config(i), members=())
        solo_results, solo_keys = grokking.progress_measures(solo)
        np.testing.assert_array_equal(solo_keys[0], keys[i])  # each seed's own key frequencies
        for name, value in solo_results.items():
            if name == "neuron_best_freq":  # an argmax over near-equal fractions may flip
                assert (results[name][:, i] == value[:, 0]).mean() > 0.95
                continue
            np.testing.assert_allclose(results[name][:, i], value[:, 0], rtol=2e-5, atol=2e-6,
                                       err_msg=f"{name}, {ens.member_label(i)}")


@pytest.mark.parametrize("which", ["solo", "ensemble"])
def test_analyze_writes_results_and_plots_for_every_member(tiny_run, tiny_ensemble, which):
    run_dir = {"solo": tiny_run, "ensemble": tiny_ensemble}[which]
    n = {"solo": 1, "ensemble": 2}[which]
    lines = mj.analyze_run(run_dir, wandb="off")
    out = run_dir / "analysis"
    with np.load(out / "grokking.npz") as f:
        assert f["restricted_loss"].shape == (5, n) and f["steps"].tolist() == [0, 50, 100, 150, 200]
        assert f["key_mask"].shape == (n, 6) and (f["key_mask"].sum(1) >= 1).all()
    summary = json.loads((out / "grokking_summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == list(range(n))
    for member in summary["members"]:
        assert member["key_frequencies"] and set(member["final"]) >= {"train_loss", "test_acc", "restricted_loss"}
    assert sum("key frequencies" in line for line in lines) == n
    for name in ("loss_phases", "restricted_excluded", "gini_weight_norm", "embed_fourier_heatmap",
                 "embed_spectrum", "neuron_clusters"):
        assert (out / f"grokking_{name}.png").stat().st_size > 1000, name
    assert any("key frequencies" in line for line in lines)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gives_one_clear_error(tiny_run, tmp_path):
    with pytest.raises(mj.ConfigError, match="unknown measure 'nonsense'"):
        grokking.measures(mj.Trajectory.load(tiny_run).config, ["train_loss", "nonsense"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / run_dir_lib.CONFIG).write_text((tiny_run / run_dir_lib.CONFIG).read_text())
    with pytest.raises(mj.CheckpointError, match="no checkpoints"):
        mj.Trajectory.load(empty)

    @dataclasses.dataclass(frozen=True)
    class OtherConfig:
        kind = "superposition"
        train: mj.TrainConfig = mj.TrainConfig()

    other = dataclasses.replace(mj.Trajectory.load(tiny_run), config=OtherConfig())
    with pytest.raises(mj.ConfigError, match="is a 'superposition' run, not a grokking one"):
        grokking.progress_measures(other)


def test_a_corrupt_checkpoint_is_named_and_skipped(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (chunk,) = [p for p in (copy / run_dir_lib.SNAPSHOTS / "W_E" / "c" / "2").rglob("*") if p.is_file()]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10  # the step-100 snapshot no longer matches its checksum
    chunk.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = mj.analyze_run(copy, wandb="off")
    assert any("step 100" in line and "corrupt" in line for line in lines)
    with np.load(copy / "analysis" / "grokking.npz") as f:
        assert f["steps"].tolist() == [0, 50, 150, 200]
