"""Induction heads: the task, the measures (checked on hand-built circuits) and bad input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.analysis import induction as ind
from mi_jax.analysis.core import analyze_params, evaluate_measures
from mi_jax.config import ConfigError, from_dict
from mi_jax.models import transformer as tfm
from mi_jax.tasks import induction as task_lib

V, N, SPAN = 16, 17, 8  # vocab, context, repeated span of the probe (x, A, A with one token x)
SHARP = 40.0  # attention logit of a hand-built head on its target


def hand_built_induction_model(n_layers: int = 2) -> tuple[dict, tfm.TransformerConfig]:
    """A 2-layer attention-only model with an exact previous-token head (L0H0) and induction head (L1H0).

    Residual basis (one-hot): [token V | position N | previous token V | output V].
    L0H0: query position p matches key position p - 1; copies the key's token into "previous token".
    L1H0: query token t matches keys whose previous token is t; copies the key's token into "output",
    which the unembedding reads (logit 20 for the copied token). The second heads are zero.
    """
    tok, pos, prev, out = slice(0, V), slice(V, V + N), slice(V + N, 2 * V + N), slice(2 * V + N, 3 * V + N)
    d_model, d_head = 3 * V + N, max(V, N)
    cfg = tfm.TransformerConfig(
        n_layers=n_layers, d_model=d_model * 2, n_heads=2, d_head=d_head, d_mlp=None, n_ctx=N, d_vocab=V
    )
    params = jax.tree.map(jnp.zeros_like, tfm.init_params(cfg, jax.random.key(0)))
    eye_v = np.eye(V)
    W_E = np.zeros((V, cfg.d_model)); W_E[:, tok] = eye_v  # noqa: E702
    W_pos = np.zeros((N, cfg.d_model)); W_pos[:, pos] = np.eye(N)  # noqa: E702
    W_U = np.zeros((cfg.d_model, V)); W_U[out] = 20 * eye_v  # noqa: E702
    params.update(W_E=jnp.asarray(W_E), W_pos=jnp.asarray(W_pos), W_U=jnp.asarray(W_U))

    def head(q_rows, k_rows, v_rows, o_cols, q_map, k_map):
        W_Q = np.zeros((2, cfg.d_model, d_head)); W_K = np.zeros_like(W_Q)  # noqa: E702
        W_V = np.zeros_like(W_Q); W_O = np.zeros((2, d_head, cfg.d_model))  # noqa: E702
        W_Q[0, q_rows, : q_map.shape[1]] = q_map * np.sqrt(d_head) * SHARP
        W_K[0, k_rows, : k_map.shape[1]] = k_map
        W_V[0, v_rows, :V] = eye_v
        W_O[0, :V, o_cols] = eye_v
        return {"W_Q": W_Q, "W_K": W_K, "W_V": W_V, "W_O": W_O}

    shift = np.eye(N, k=1)  # key position k -> slot k + 1, matched by query position p = k + 1
    layers = [head(pos, pos, tok, prev, np.eye(N), shift), head(tok, prev, tok, out, eye_v, eye_v)]
    for layer in range(n_layers):
        for name, value in layers[layer].items():
            params["blocks"][layer]["attn"][name] = jnp.asarray(value, jnp.float32)
    return params, cfg


def unique_probe(batch: int = 4) -> jnp.ndarray:
    """x, A, A with no token repeated in x, A (no chance matches): [batch, N]."""
    rng = np.random.default_rng(0)
    firsts = [rng.permutation(V)[: SPAN + 1] for _ in range(batch)]
    return jnp.asarray(np.stack([np.concatenate([a, a[1:]]) for a in firsts]), jnp.int32)


def test_hand_built_model_has_exact_previous_token_and_induction_heads():
    params, cfg = hand_built_induction_model()
    tokens = unique_probe()

    @jax.jit
    def measure(params, tokens):
        return (
            ind.head_scores(ind.patterns(params, tokens, cfg), tokens, SPAN),
            task_lib.per_position_loss(params, tokens, cfg),
            ind.direct_logit_attribution(params, tokens, SPAN, ind.attention_cache(params, tokens, cfg)[1]),
            ind.ov_copying_score(params),
            ind.composition_scores(params),
        )

    scores, loss, dla, ov, comp = measure(params, tokens)
    assert scores["previous_token"][0, 0] > 0.99
    assert scores["induction"][1, 0] > 0.99
    assert scores["prefix_matching"][1, 0] > 0.99
    assert scores["induction"][0, 0] < 0.01
    # in-context learning: the repeated half is predicted almost perfectly, the first half is not
    assert float(loss[SPAN + 1 :].max()) < 1e-3  # entry t - 1 predicts token t; tokens SPAN+2.. are copies
    assert float(loss[:SPAN].min()) > 1.0
    assert float(task_lib.icl_score(loss, 2, N - 1)) < -1.0
    assert int(jnp.argmax(dla.ravel())) == 2  # L1H0
    assert float(ov[1, 0]) == pytest.approx(1.0, abs=1e-5)
    host_ov = ind.ov_copying_from_circuit(np.asarray(jax.jit(ind.ov_circuit)(params)))  # the trajectory path
    np.testing.assert_allclose(host_ov, np.asarray(ov), atol=1e-5)
    assert float(comp["k"][0, 0]) > 0.1  # the induction head's keys read the previous-token head
    assert float(comp["q"][0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(comp["v"][0, 0]) == pytest.approx(0.0, abs=1e-6)


def test_uniform_attention_scores_at_chance():
    params, cfg = hand_built_induction_model()
    for block in params["blocks"].values():
        block["attn"]["W_Q"] = jnp.zeros_like(block["attn"]["W_Q"])
    tokens = unique_probe()
    scores = jax.jit(lambda p, t: ind.head_scores(ind.patterns(p, t, cfg), t, SPAN))(params, tokens)
    chance = ind.chance_scores(np.asarray(tokens), SPAN)
    assert chance["induction"] == pytest.approx(np.mean(1 / (np.arange(N - SPAN, N) + 1)), rel=1e-6)
    for name, value in chance.items():
        np.testing.assert_allclose(np.asarray(scores[name]), value, rtol=1e-5)


def test_composition_of_orthogonal_subspaces_is_zero():
    cfg = tfm.TransformerConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=None, n_ctx=8, d_vocab=8)
    params = tfm.init_params(cfg, jax.random.key(1))
    half = cfg.d_model // 2
    a0 = params["blocks"][0]["attn"]
    a0["W_O"] = a0["W_O"].at[..., half:].set(0.0)  # layer 0 writes only to the first half
    a1 = params["blocks"][1]["attn"]
    for name in ("W_Q", "W_K", "W_V"):
        a1[name] = a1[name].at[:, :half].set(0.0)  # layer 1 reads only the second half
    comp = jax.jit(ind.composition_scores)(params)
    for kind in ("q", "k", "v"):
        np.testing.assert_allclose(np.asarray(comp[kind]), 0.0, atol=1e-7)
    unrestricted = jax.jit(ind.composition_scores)(tfm.init_params(cfg, jax.random.key(1)))
    assert float(unrestricted["k"].min()) > 0.05


def test_trajectory_measures_equal_per_checkpoint_measures():
    cfg = task_lib.InductionConfig(
        seq_len=12, d_vocab=10, repeat_len=4, min_repeat_len=2,
        model=tfm.TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None),
    )
    measures, data = ind.make_measures(cfg), ind.probe_data(cfg, n=8)
    keys = jax.random.split(jax.random.key(3), 6)
    per = [tfm.init_params(cfg.transformer, k) for k in keys]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs).reshape(3, 2, *xs[0].shape), *per)  # [time 3, seed 2]
    # 3 checkpoints split over the 2 test devices (the last share padded), and 1 on one device
    traj = analyze_params(stacked, measures, data, chunk_size=2)
    in_turn = analyze_params(stacked, measures, data, chunk_size=2, members_in_turn=True)  # members mapped, not vmapped
    first = analyze_params(jax.tree.map(lambda x: x[:1], stacked), measures, data)
    one_checkpoint = jax.jit(lambda p: evaluate_measures(measures, p, data))
    for i, p in enumerate(per):
        one = one_checkpoint(p)
        for name, value in one.items():
            np.testing.assert_allclose(traj[name][i // 2, i % 2], np.asarray(value), rtol=2e-4, atol=2e-5)
            np.testing.assert_allclose(in_turn[name][i // 2, i % 2], np.asarray(value), rtol=2e-4, atol=2e-5)
            if i < 2:
                np.testing.assert_allclose(first[name][0, i], np.asarray(value), rtol=2e-4, atol=2e-5)
    assert all(v.shape[:2] == (3, 2) for v in traj.values())


def test_measure_families_merge_their_entries_and_refuse_clashes():
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    measures = {"sums": lambda p, d: {"row_sum": p["w"].sum(1), "total": p["w"].sum()}, "scale": lambda p, d: d * p["w"].max()}
    out = evaluate_measures(measures, params, 2.0)
    assert sorted(out) == ["row_sum", "scale", "total"]
    np.testing.assert_allclose(out["row_sum"], [3.0, 12.0])
    assert float(out["scale"]) == 10.0
    with pytest.raises(ConfigError, match="measure 'again' returns 'total', which another measure also returns"):
        evaluate_measures({**measures, "again": lambda p, d: {"total": 0.0}}, params, 2.0)


def test_batches_are_pure_in_key_and_step_and_repeat_their_span():
    cfg = task_lib.InductionConfig(seq_len=20, d_vocab=50, repeat_len=6, min_repeat_len=3)
    task = task_lib.InductionTask(cfg)
    key = jax.random.key(0)
    b1, b2, b3 = task.batch(key, 5), task.batch(key, 5), task.batch(key, 6)
    assert b1.shape == (cfg.train.batch_size, 20) and b1.dtype == jnp.int32
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(b1, b3)
    # every sequence's last L tokens (some L in [3, 6]) occur earlier as a contiguous span
    for seq in np.asarray(b1):
        found = any(
            any(np.array_equal(seq[-L:], seq[s : s + L]) for s in range(0, 20 - 2 * L + 1)) for L in range(3, 7)
        )
        assert found
    probe = np.asarray(task_lib.repeated_probe(key, 3, 20, 50, 6))
    np.testing.assert_array_equal(probe[:, -6:], probe[:, -12:-6])
    metrics = jax.jit(task.evaluate)(task.init_params(jax.random.key(0)))
    assert abs(float(metrics["test_loss"]) - np.log(50)) < 0.3


@pytest.mark.slow  # ~13 s cold: every task shape compiles its sampler; no preset uses these tasks
def test_markov_and_mixed_tasks_sample_valid_sequences():
    for name in ("markov", "mixed"):
        cfg = task_lib.InductionConfig(task=name, seq_len=16, d_vocab=6, repeat_len=4, min_repeat_len=2)
        tokens = np.asarray(task_lib.sample(cfg, jax.random.key(1), 64))
        assert tokens.shape == (64, 16) and tokens.min() >= 0 and tokens.max() < 6
    # a sparse Dirichlet makes each token's successor predictable within a sequence; a flat one does not
    def top_successor_share(alpha):
        cfg = task_lib.InductionConfig(task="markov", seq_len=64, d_vocab=4, markov_alpha=alpha, repeat_len=4,
                                       min_repeat_len=2)
        shares = []
        for seq in np.asarray(task_lib.sample(cfg, jax.random.key(2), 16)):
            counts = np.zeros((4, 4))
            np.add.at(counts, (seq[:-1], seq[1:]), 1)
            seen = counts.sum(1) > 4
            shares.extend(counts.max(1)[seen] / counts.sum(1)[seen])
        return float(np.mean(shares))

    assert top_successor_share(0.05) > 0.85 > 0.5 > top_successor_share(100.0)


def test_phase_change_finds_a_sigmoid_step():
    steps = np.arange(0, 2000, 20)
    rise = 1 / (1 + np.exp(-(steps - 1000) / 30))
    pc = ind.phase_change(steps, 0.05 + 0.9 * rise, -2 * rise, steps, 3 - 3 * rise, 3 - 3 * rise)
    assert abs(pc["induction_step"] - 1000) <= 40 and abs(pc["icl_step"] - 1000) <= 40
    assert pc["coincide"]
    lo, hi = pc["induction_window"]
    assert 850 < lo < 1000 < hi < 1150
    late = ind.phase_change(steps, rise, -np.roll(rise, 40), steps, 3 - 3 * rise, 3 - 3 * rise)
    assert not late["coincide"]
    flat = ind.phase_change(steps, 0.04 + 0.01 * rise, -2 * rise, steps, 3 - 3 * rise, 3 - 3 * rise)
    assert not flat["coincide"]  # the ICL score jumps but no induction head forms


def test_lower_convex_hull_touches_a_convex_curve_and_bridges_a_dent():
    x = np.linspace(0.0, 4.0, 41)
    convex = (x - 1.5) ** 2
    np.testing.assert_allclose(ind.lower_convex_hull(x, convex), convex, atol=1e-12)
    dented = convex + np.where(np.abs(x - 3) < 0.5, 0.4, 0.0)  # lifted points leave the hull where they were
    np.testing.assert_allclose(ind.lower_convex_hull(x, dented), convex, atol=0.3)
    assert (ind.lower_convex_hull(x, dented) <= dented + 1e-12).all()


def test_loss_bump_is_a_slow_stretch_then_a_faster_fall_and_absent_from_a_power_law():
    steps = np.arange(0, 20_001, 200)
    t = np.maximum(steps, 1).astype(float)
    power_law = 2.0 + 4.0 * (t / 100) ** -0.5  # convex in log(step): no bump anywhere
    assert ind.loss_bump(steps, power_law)["bump"] < 1e-3
    early_drop = 2.0 + 3.0 * np.exp(-t / 300)  # concave in log(step) before its steepest point, convex after
    assert ind.loss_bump(steps, early_drop)["bump"] < 1e-3
    phase = 0.3 / (1 + np.exp(-(t - 9_000) / 400))  # 0.3 nats lost at step ~9,000
    plateau = power_law + 0.3 - phase
    bump = ind.loss_bump(steps, plateau)
    assert bump["bump"] > 0.1 and bump["rise"] == 0.0  # slows, then falls faster; never climbs
    assert 4_000 < bump["plateau_start"] < bump["bump_step"] < 9_000 <= bump["plateau_end"] < 10_000
    noisy = plateau + np.random.default_rng(0).normal(0, 0.005, len(steps))
    assert abs(ind.loss_bump(steps, noisy)["bump_step"] - bump["bump_step"]) <= 1_000
    climb = plateau + 0.1 * np.exp(-(((t - 8_000) / 600) ** 2))  # a true rise on the plateau
    assert ind.loss_bump(steps, climb)["rise"] > 0.01
    assert ind.loss_bump([0, 10, 20], [5.0, 3.0, 2.5])["bump"] == 0.0  # fewer evaluations than the smoothing
    assert ind.loss_bump([0], [5.0]) == {"bump": 0.0, "bump_step": 0, "plateau_start": 0, "plateau_end": 0, "rise": 0.0}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"repeat_len": 20, "seq_len": 32}, "repeat_len=20 > seq_len/2"),
        ({"d_vocab": 1}, "d_vocab=1 is too small"),
        ({"task": "copying"}, "task must be one of"),
        ({"min_repeat_len": 30}, "min_repeat_len must be in"),
    ],
)
def test_bad_config_is_one_clear_line(changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        dataclasses.replace(task_lib.InductionConfig(), **changes)
    assert "\n" not in str(err.value)


def test_unknown_task_name_from_a_dict_and_missing_layers():
    with pytest.raises(ConfigError, match="task: must be one of"):
        from_dict(task_lib.InductionConfig, {"task": "sorting"})
    params, _ = hand_built_induction_model(n_layers=1)
    with pytest.raises(ConfigError, match="composition scores needs a model with >= 2 layers; this one has 1"):
        ind.composition_scores(params)
    one_layer = task_lib.InductionConfig(model=tfm.TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=None))
    assert "composition" not in ind.make_measures(one_layer)


@pytest.mark.slow
def test_induction_2l_forms_an_induction_head_at_the_icl_phase_change(tmp_path):
    """The preset on one seed (a few minutes on 2 cores): a layer-1 induction head rises from chance
    to > 0.5 together with the ICL score, on top of a layer-0 previous-token head."""
    from mi_jax.reports.induction import summarize_member

    cfg = mj.load_preset("induction_2l")
    mj.train(cfg, tmp_path / "run", wandb="off", progress=False)
    traj = mj.Trajectory.load(tmp_path / "run")
    results = ind.finish(mj.analyze(traj, ind.make_measures(cfg), ind.probe_data(cfg)))
    seed = summarize_member(results, traj.steps, traj.metrics, 0)
    chance = ind.chance_scores(np.asarray(ind.probe_data(cfg)["probe"]), cfg.repeat_len)
    assert seed["induction_head"].startswith("L1")
    assert seed["induction_score"]["start"] < 2 * chance["induction"] and seed["induction_score"]["final"] > 0.5
    assert seed["previous_token_score_final"] > 4 * chance["previous_token"]
    assert seed["ov_copying_final"] > 0.9
    assert seed["icl_score"]["final"] < -2.0
    assert seed["k_composition"]["final"] > seed["k_composition"]["start"]
    assert seed["phase_change"]["coincide"]
