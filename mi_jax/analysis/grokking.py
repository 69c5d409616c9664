"""Progress measures for grokking modular addition (Nanda, Chan, Lieberum, Smith, Steinhardt 2023).

Every measure is a pure function `(params, data) -> value` of ONE model, so
`mi_jax.analysis.core.analyze` can run it over every checkpoint and seed in one call.
`data` is the dict `make_data(cfg)` returns: all p² inputs (a-major, index a*p + b), the
train/test split, Fourier tables, and `key_mask` [freq], the model's key frequencies (found
once, from the trained model, by `key_frequencies`, then held fixed over the trajectory).

Notation: p the modulus, w_k = 2πk/p, s = (a + b) mod p, L[(a,b), c] the logit of output c at
the `=` position, F the real Fourier basis of Z_p (`fourier.basis`), K the key frequencies.

    train/test loss, acc   cross-entropy and accuracy of L on the train / test pairs (every loss here
                           by `label_nll`: float32, keeping its relative precision at ~1e-7 too)
    logit directions       D_k^cos[(a,b), c] = cos(w_k(a+b-c)), D_k^sin = sin(w_k(a+b-c)),
                           over all p² pairs and p outputs; mutually orthogonal
    logit_freq_energy[k]   (<L,D_k^cos>²/|D_k^cos|² + <L,D_k^sin>²/|D_k^sin|²) / |L - mean_c L|²:
                           the share of the logits (per-pair constants removed) in frequency k's
                           a+b-c directions
    pair waves             c_k[(a,b)] = cos(w_k(a+b)), s_k[(a,b)] = sin(w_k(a+b)) over all p² pairs,
                           ĉ_k = c_k/|c_k|, ŝ_k = s_k/|s_k|; Π_K X = Σ_{k∈K} ĉ_k ĉ_kᵀX + ŝ_k ŝ_kᵀX projects
                           any [pair, ...] array on the key frequencies' a+b waves
    restricted_loss        the paper's (as in its code): keep only the key frequencies' a+b waves of
                           the last MLP's neuron activations A [pair, d_mlp] and read them out through
                           the neurons' direct path: R = (mean_pairs A + Π_K A) W_out W_U, then
                           R += mean_pairs L - mean_pairs R (the input-independent logit terms kept).
                           Train loss of R. Low once the circuit exists, before the test loss falls.
    restricted_loss_abc    train loss of  mean_pairs L + Σ_{k∈K} P_k L, P_k L the projection of the
                           logits on D_k^cos, D_k^sin (only the a+b-c waves themselves kept; stricter)
    excluded_loss          the paper's: train loss of  L - Π_K L, every key frequency's a+b wave
                           removed from the logits of every output c; the memorisation is kept.
                           Rises as the model comes to rely on the circuit.
    embed_freq_norms[k]    |(F W_E)_{cos k}|² + |(F W_E)_{sin k}|², square-rooted, W_E [a, d_model]
    logit_map_freq_norms   the same for W_L = (W_out W_U)^T [c, d_mlp] (Fourier over c)
    *_gini                 Gini coefficient of those norms (`gini`): 0 uniform, (n-1)/n one-hot
    neuron_best_frac[n]    max_k of the fraction of neuron n's activation variance over the p²
                           pairs (at `=`) in the 2D Fourier components {const, cos k, sin k}_a ⊗
                           {const, cos k, sin k}_b (the constant-constant part removed first)
    neuron_best_freq[n]    that k: neuron n's frequency cluster
    weight_norm            Σ of every squared weight (all parameters)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.analysis import fourier
from mi_jax.analysis.core import analyze, analyze_params
from mi_jax.config import ConfigError, check
from mi_jax.models import transformer as tfm
from mi_jax.models.fast import grid_forward, grid_forward_applies, rough_mean
from mi_jax.tasks.grokking import GrokkingConfig, GrokkingData, correct, label_nll

# ----------------------------------------------------------------------------- fixed data


def make_data(cfg: GrokkingConfig, key_freqs=()) -> dict:
    """The fixed inputs of every measure (a dict of arrays; `key_mask` [freq] marks `key_freqs`)."""
    p, nf = cfg.p, fourier.n_freqs(cfg.p)
    d = GrokkingData.from_config(cfg)
    a, b = d.tokens[:, 0].astype(np.int64), d.tokens[:, 1].astype(np.int64)
    w = 2 * np.pi * np.arange(1, nf + 1) / p  # [freq]
    s = (a + b) % p
    cos_c, sin_c = np.cos(np.outer(np.arange(p), w)), np.sin(np.outer(np.arange(p), w))  # [c or residue, freq]
    sin_c = np.where(np.abs(sin_c) > 1e-12, sin_c, 0)  # an even p's Nyquist sine is 0, not rounding noise
    # |D_k|² = Σ_pairs Σ_c cos²(w_k(s - c)) (and sin²); c - s runs over all of Z_p for every pair, so
    # it is n_pairs Σ_c cos²(w_k c); 0 for the sine of an even p's Nyquist frequency
    norm_cos, norm_sin = len(s) * (cos_c**2).sum(0), len(s) * (sin_c**2).sum(0)
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    # the unit pair waves ĉ_k, ŝ_k take one value per residue s = a+b: store them as [residue, freq]
    per_pair_norm = lambda wave_r: np.sqrt((wave_r[s] ** 2).sum(0))  # noqa: E731  |c_k| over the pairs
    unit = lambda wave_r: wave_r / np.maximum(per_pair_norm(wave_r), 1e-9)  # noqa: E731  0 stays 0
    return {
        "residue": s.astype(np.int32), "wave_cos": f32(unit(cos_c)), "wave_sin": f32(unit(sin_c)),
        "tokens": d.tokens, "labels": d.labels,
        "train_idx": d.train_idx.astype(np.int32), "test_idx": d.test_idx.astype(np.int32),
        "F": f32(fourier.basis(p)), "freq_indicator": f32(fourier.freq_indicator(p)),
        "cos_c": f32(cos_c), "sin_c": f32(sin_c),
        "norm_cos": f32(norm_cos), "norm_sin": f32(norm_sin),
        "inv_norm_cos": f32(1 / norm_cos), "inv_norm_sin": f32(np.where(norm_sin > 1e-9, 1 / np.maximum(norm_sin, 1e-9), 0)),
        "v_mirror": f32(np.where(2 * np.arange(1, nf + 1) == p, 1, 2)),
        "key_mask": key_mask(p, key_freqs),
        "pair_a": a.astype(np.int32), "pair_b": b.astype(np.int32), "diff_residue": ((a - b) % p).astype(np.int32),
    }


def key_mask(p: int, key_freqs) -> np.ndarray:
    """[freq] float32: 1 at each key frequency k (stored at index k-1), else 0."""
    mask = np.zeros(fourier.n_freqs(p), np.float32)
    for k in key_freqs:
        check(1 <= int(k) <= fourier.n_freqs(p), f"key frequency {k} is not in 1..{fourier.n_freqs(p)}")
        mask[int(k) - 1] = 1
    return mask


# ----------------------------------------------------------------------------- pure numerics


def gini(x: jax.Array) -> jax.Array:
    """Gini coefficient of non-negative x [..., n]: Σ_i (2i - n - 1) x_(i) / (n Σ x), x_(i) ascending.

    0 for a uniform vector, (n-1)/n (the maximum) for a one-hot one; 0 for all zeros.
    """
    x = jnp.sort(x, axis=-1)
    n = x.shape[-1]
    i = jnp.arange(1, n + 1, dtype=x.dtype)
    total = x.sum(-1)
    return jnp.where(total > 0, ((2 * i - n - 1) * x).sum(-1) / (n * jnp.where(total > 0, total, 1)), 0.0)


def residue_sums(x: jax.Array, data: dict) -> jax.Array:
    """Y[s] = Σ over the pairs with a + b ≡ s of x[pair]: x [pair, n] -> [residue, n]."""
    return jax.ops.segment_sum(x, data["residue"], num_segments=data["cos_c"].shape[0])


def logit_projection(logits: jax.Array, data: dict, Y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Coefficients of logits [pair, c] on the a+b-c directions: (α, β) [freq], L ≈ Σ α_k D_k^cos + β_k D_k^sin.

    D_k depends on the pair only through s = a+b, so <L, D_k> = Σ_{s,c} Y[s, c] cos(w_k(s - c))
    with Y the residue sums of L (pass them as Y [s, c] when already formed; logits may then be None);
    cos_c and sin_c [residue, freq] serve as the tables over s and c.
    """
    cos_t, sin_t = data["cos_c"], data["sin_c"]  # cos(w_k r), sin(w_k r) [residue, freq]
    Y = residue_sums(logits, data) if Y is None else Y  # [s, c]
    Yc, Ys = Y @ cos_t, Y @ sin_t  # [s, freq]
    alpha = (cos_t * Yc + sin_t * Ys).sum(0) * data["inv_norm_cos"]
    beta = (sin_t * Yc - cos_t * Ys).sum(0) * data["inv_norm_sin"]
    return alpha, beta


def key_component(logits: jax.Array, data: dict, mask: jax.Array) -> jax.Array:
    """Σ_{k: mask_k=1} P_k L [pair, c]: the logits' part in the masked frequencies' a+b-c directions."""
    return key_component_residues(*logit_projection(logits, data), data, mask)[data["residue"]]


def key_component_residues(alpha: jax.Array, beta: jax.Array, data: dict, mask: jax.Array) -> jax.Array:
    """`key_component` as a function of the residue: [s, c], from the coefficients (α, β) [freq]."""
    alpha, beta = alpha * mask, beta * mask
    cos_t, sin_t = data["cos_c"], data["sin_c"]
    # cos(w(s-c)) = cos ws cos wc + sin ws sin wc ;  sin(w(s-c)) = sin ws cos wc - cos ws sin wc
    on_cos_c = alpha * cos_t + beta * sin_t  # [s, freq]
    on_sin_c = alpha * sin_t - beta * cos_t
    return on_cos_c @ cos_t.T + on_sin_c @ sin_t.T


def key_wave_residues(x: jax.Array, data: dict, mask: jax.Array, Y: jax.Array | None = None) -> jax.Array:
    """Π_K x as a function of the residue: Z [residue, n] with (Π_K x)[pair] = Z[a + b mod p].

    Π_K x = Σ_k m_k ĉ_k (ĉ_kᵀ x) + ŝ_k (ŝ_kᵀ x); the waves depend on the pair only through s, so
    ĉ_kᵀ x = Σ_s ĉ_k[s] Y[s] with Y the residue sums (pass them as Y [residue, n] when already
    formed; x may then be None): O(p² n) work, not O(p² · freqs · n).
    """
    cos_w, sin_w = data["wave_cos"], data["wave_sin"]  # [residue, freq]
    Y = residue_sums(x, data) if Y is None else Y
    return cos_w @ (mask[:, None] * (cos_w.T @ Y)) + sin_w @ (mask[:, None] * (sin_w.T @ Y))


def key_wave_component(x: jax.Array, data: dict, mask: jax.Array) -> jax.Array:
    """Π_K x [pair, n]: the part of x on the masked frequencies' unit waves cos/sin(w_k(a+b)) over pairs."""
    return key_wave_residues(x, data, mask)[data["residue"]]


PAIR_SUMS = ("pair_a", "pair_b", "residue", "diff_residue")  # the sums `centred_sums` forms, in order


def centred_sums(x: jax.Array, data: dict, p: int) -> tuple[jax.Array, jax.Array]:
    """Sums of the centred x - mean(x) over the pairs of each a, b, a+b and a-b residue, and Σ (x - mean)²:
    x [pair, n] holding every (a, b) once -> ([4, p, n] in `PAIR_SUMS` order, [n]).

    Formed from sums of x itself, the mean taken out after: no centred copy of x is made (on CPU each
    [p², n] pass costs as much as a measure). x must be near its mean (less its `rough_mean`), or the mean's
    part of the sums would cancel away a near-constant column's variation.
    """
    sums = jnp.stack([jax.ops.segment_sum(x, data[k], num_segments=p) for k in PAIR_SUMS])
    n_pairs = x.shape[0]  # p², each sum over p pairs
    mean = sums[0].sum(0) / n_pairs
    return sums - p * mean, (x * x).sum(0) - n_pairs * mean**2


def neuron_freq_fractions(acts: jax.Array, data: dict, p: int) -> jax.Array:
    """Fraction of each neuron's variance in each frequency's 2D block: acts [pair, d_mlp] -> [freq, d_mlp].

    acts holds every (a, b) once, in the order of data's pairs (`freq_fractions` from sums already formed)."""
    return freq_fractions(*centred_sums(acts - rough_mean(acts), data, p), data, p)


def freq_fractions(sums: jax.Array, total: jax.Array, data: dict, p: int) -> jax.Array:
    """`neuron_freq_fractions` from the centred activations' `centred_sums` ([4, p, d_mlp], [d_mlp]).

    Block k = span{const, cos k, sin k}_a ⊗ {const, cos k, sin k}_b = span{e^{i(ua+vb)}: u, v ∈ {0, ±k}},
    so its energy is Σ |X[u, v]|² / p² over those (u, v), X the 2D DFT of the centred activations A
    (Parseval on the subspace). Each of the 9 entries is a 1D DFT at k of one p-sized sum of A: X[k, 0]
    of the sums over b (rows a), X[0, k] over a, X[k, k] over a+b ≡ s, X[k, -k] over a-b ≡ d (X[0, 0] = 0
    after centring, and the entries at -u, -v are the conjugates). O(p² n) adds, no transform of A.
    """
    re = jnp.einsum("xrn,rk->xkn", sums, data["cos_c"])  # [sum, freq, d_mlp]: Σ_r S[r] cos(w_k r)
    im = jnp.einsum("xrn,rk->xkn", sums, data["sin_c"])
    power = re**2 + im**2  # |X|² of (k, 0), (0, k), (k, k), (k, -k)
    # each entry and its conjugate count (weight 2), except at an even p's Nyquist k (k = -k: once,
    # and (k, -k) is (k, k) again); v_mirror is 2, or 1 at that k
    mirror = data["v_mirror"][:, None]
    energy = mirror * power[:3].sum(0) + 2 * (mirror - 1) * power[3]
    total = p * p * total
    return energy / jnp.where(total > 0, total, 1.0)


def weight_norm(params: dict, data=None) -> jax.Array:
    """Σ of every squared parameter."""
    # one reduction over every leaf together: a sum per leaf was a kernel per leaf to compile and launch
    return jnp.sum(jnp.square(jnp.concatenate([x.astype(jnp.float32).ravel() for x in jax.tree.leaves(params)])))


# ----------------------------------------------------------------------------- measures


def measure_names(cfg: GrokkingConfig) -> list[str]:
    """The measures this config's model supports, in a fixed order."""
    check(type(cfg).kind == "grokking", f"grokking measures need a grokking (modular arithmetic) run, got kind {type(cfg).kind!r}")
    tcfg = cfg.transformer
    out = ["train_loss", "train_acc", "weight_norm", "embed_freq_norms", "embed_gini"]
    if cfg.op == "+":
        out += ["restricted_loss"] if tcfg.d_mlp else []
        out += ["restricted_loss_abc", "excluded_loss", "logit_freq_energy"]
    if len(GrokkingData.from_config(cfg).test_idx):
        out += ["test_loss", "test_acc"]
    if tcfg.d_mlp:
        out += ["logit_map_freq_norms", "logit_map_gini"]
        if cfg.op != "/":  # the 2D transform needs every (a, b) pair
            out += ["neuron_best_frac", "neuron_best_freq"]
    return out


def family(cfg: GrokkingConfig, names=None):
    """fn(params, data) -> {name: value} of the `names`d measures (all by default) from ONE forward pass.

    One family so that the measures share that forward pass and the sums over pairs built from it
    (each separate measure traces its own). Unknown names -> ConfigError.
    """
    known = measure_names(cfg)
    names = known if names is None else list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown measure {unknown[0]!r} for this run (known: {', '.join(sorted(known))})")
    p, tcfg = cfg.p, cfg.transformer
    hook = f"blocks.{tcfg.n_layers - 1}.mlp.hook_post"
    tokens = GrokkingData.from_config(cfg).tokens
    rows = tokens[:, 0].astype(np.int64) * p + tokens[:, 1]  # each input's row of grid_forward's [a*p + b] grid
    in_grid_order = len(rows) == p * p and bool((rows == np.arange(p * p)).all())

    def forward(params, data):
        """-> logits [pair, p], neuron activations at `=` less their `rough_mean` [pair, d_mlp] (or None),
        pairs in data's order."""
        if grid_forward_applies(tcfg):
            logits, acts = grid_forward(params, tcfg, p, roughly_centred=True)
            if in_grid_order:  # data's pairs are the grid's rows: no copy
                return logits[:, :p], acts
            at = jnp.asarray(data["tokens"][:, 0] * p + data["tokens"][:, 1])
            return logits[at, :p], acts[at]
        cache = [hook] if tcfg.d_mlp else []
        logits, acts = tfm.apply(params, jnp.asarray(data["tokens"]), tcfg, cache=cache)
        acts = acts[hook][:, -1] if tcfg.d_mlp else None
        return logits[:, -1, :p], (acts - rough_mean(acts) if tcfg.d_mlp else None)

    def residue_table_loss(table, data):
        """Train loss of logits that depend on the pair only through s = a+b: table [s, c] -> scalar."""
        idx = data["train_idx"]
        s, labels = jnp.asarray(data["residue"])[idx], jnp.asarray(data["labels"])[idx]
        return label_nll(table[s], labels).mean()

    def values(params, data):
        out = {"weight_norm": weight_norm(params)}
        out["embed_freq_norms"] = fourier.freq_norms(fourier.embedding_matrix(params, p), data["F"], data["freq_indicator"])
        out["embed_gini"] = gini(out["embed_freq_norms"])
        if tcfg.d_mlp:
            W_L = fourier.neuron_logit_map(params, p)  # [c, d_mlp]
            out["logit_map_freq_norms"] = fourier.freq_norms(W_L, data["F"], data["freq_indicator"])
            out["logit_map_gini"] = gini(out["logit_map_freq_norms"])
        logits, acts = forward(params, data)
        labels = jnp.asarray(data["labels"])
        nll, right = label_nll(logits, labels), correct(logits, labels)  # [pair]
        for split in ("train", "test"):
            idx = data[f"{split}_idx"]
            out[f"{split}_loss"] = nll[idx].mean()
            out[f"{split}_acc"] = right[idx].mean(dtype=jnp.float32)
        if tcfg.d_mlp and cfg.op != "/":  # every (a, b) once: sums of the centred activations per a, b, a±b
            sums, total = centred_sums(acts, data, p)
            fracs = freq_fractions(sums, total, data, p)
            out["neuron_best_frac"] = fracs.max(0)
            out["neuron_best_freq"] = fracs.argmax(0).astype(jnp.int32) + 1
        if cfg.op == "+":
            mask = data["key_mask"]
            Y = residue_sums(logits, data)  # [s, c]
            counts = residue_sums(jnp.ones((logits.shape[0], 1), logits.dtype), data)  # [s, 1] pairs per residue
            mean_logits = Y.sum(0) / logits.shape[0]  # [c]: the mean over pairs
            alpha, beta = logit_projection(None, data, Y)
            centred = logits - logits.mean(1, keepdims=True)
            out["logit_freq_energy"] = (alpha**2 * data["norm_cos"] + beta**2 * data["norm_sin"]) / jnp.sum(centred**2)
            out["restricted_loss_abc"] = residue_table_loss(mean_logits + key_component_residues(alpha, beta, data, mask), data)
            tr = data["train_idx"]
            excluded = logits[tr] - key_wave_residues(None, data, mask, Y)[jnp.asarray(data["residue"])[tr]]
            out["excluded_loss"] = label_nll(excluded, labels[tr]).mean()
            if tcfg.d_mlp:
                # the paper's: (mean A + Π_K A) W_L, shifted to the mean logits; the mean A term cancels,
                # and Π_K A depends on the pair only through s, so all of it is a [s, c] table
                # Π_K of the centred activations (the waves sum to 0 over pairs), from their residue sums
                kept = key_wave_residues(None, data, mask, sums[PAIR_SUMS.index("residue")]) @ W_L.T  # [s, c]
                kept_mean = (counts * kept).sum(0) / logits.shape[0]
                out["restricted_loss"] = residue_table_loss(kept - kept_mean + mean_logits, data)
        return {n: out[n] for n in names}  # what is not asked for is never computed (XLA drops it)

    return values


def measures(cfg: GrokkingConfig, names=None) -> dict:
    """{name: fn(params, data)} for the config's model, each on its own; `names` picks some (unknown ->
    ConfigError). To evaluate several, `family` shares one forward pass between them."""
    chosen = measure_names(cfg) if names is None else list(names)
    one = family(cfg, chosen)  # checks the names
    return {n: (lambda P, D, n=n: one(P, D)[n]) for n in chosen}


# ----------------------------------------------------------------------------- key frequencies, phases


def key_frequencies(logit_freq_energy: np.ndarray, max_keys: int = 12, min_share: float = 0.01) -> np.ndarray:
    """The key frequencies of a trained model from its `logit_freq_energy` [freq] (final checkpoint).

    Sort the shares e_(1) >= e_(2) >= ...; keep the top n where the ratio e_(n) / e_(n+1) is
    largest (n <= max_keys, e_(n) >= min_share): the frequencies the logits are built from stand
    far above the rest once the circuit has formed. Returns the frequencies k (1-based), ascending.
    """
    e = np.asarray(logit_freq_energy, float)
    order = np.argsort(-e)
    top = e[order]
    n_max = int(min(max_keys, len(e) - 1, max(1, (top >= min_share).sum())))
    ratios = top[:n_max] / np.maximum(top[1 : n_max + 1], 1e-12)
    n = int(np.argmax(ratios)) + 1
    return np.sort(order[:n] + 1)


def phase_boundaries(steps, train_acc, test_acc, test_loss, acc_level: float = 0.99, drop: float = 0.1) -> dict:
    """Memorisation / circuit formation / cleanup boundaries (steps) from one model's curves [time].

    memorised   first step with train_acc >= acc_level (end of memorisation)
    generalised first later step with test_acc >= acc_level (end of cleanup)
    cleanup     first step between the peak of log test loss after `memorised` and `generalised`
                where log test loss has fallen by `drop` of its way from the peak to its value
                at `generalised` (the sharp fall of the test loss starts cleanup)
    Phases: memorisation [first, memorised], circuit formation [memorised, cleanup],
    cleanup [cleanup, generalised]. A boundary that is never reached is None.
    """
    steps, train_acc, test_acc = np.asarray(steps), np.asarray(train_acc), np.asarray(test_acc)
    log_loss = np.log(np.maximum(np.asarray(test_loss, float), 1e-30))
    out = {"memorised": None, "cleanup": None, "generalised": None}
    hit = np.flatnonzero(train_acc >= acc_level)
    if not len(hit):
        return out
    i_mem = int(hit[0])
    out["memorised"] = int(steps[i_mem])
    gen = np.flatnonzero(test_acc[i_mem:] >= acc_level)
    if not len(gen):
        return out
    i_gen = i_mem + int(gen[0])
    out["generalised"] = int(steps[i_gen])
    i_peak = i_mem + int(np.argmax(log_loss[i_mem : i_gen + 1]))
    level = log_loss[i_peak] - drop * (log_loss[i_peak] - log_loss[i_gen])
    i_clean = i_peak + int(np.flatnonzero(log_loss[i_peak : i_gen + 1] <= level)[0])
    out["cleanup"] = int(steps[i_clean])
    return out


# ----------------------------------------------------------------------------- over a trajectory


def find_key_frequencies(traj, data: dict) -> list[np.ndarray]:
    """Key frequencies of each member, from its final checkpoint's logits (or its W_E spectrum for ops
    other than +): a list with one ascending array of frequencies per member."""
    cfg = traj.config
    name = "logit_freq_energy" if cfg.op == "+" else "embed_freq_norms"
    final = analyze_params(jax.tree.map(lambda x: x[-1:], traj.params), {name: family(cfg, [name])}, data)[name][0]
    if name == "embed_freq_norms":  # [member, freq] norms -> shares of the energy
        final = final**2 / np.maximum((final**2).sum(-1, keepdims=True), 1e-30)
    return [key_frequencies(e) for e in final]


def progress_measures(traj, names=None, key_freqs=None, chunk_size: int | None = None):
    """All (or the `names`d) progress measures for every checkpoint and member of `traj`, one call.

    key_freqs: one sequence of frequencies per member, or None to find them from the final
    checkpoint; each member's enter its measures as its own `key_mask`. chunk_size: checkpoints per
    vmapped batch of the map over time. -> ({name: [time, member, ...]}, key_freqs).
    """
    cfg = traj.config
    check(type(cfg).kind == "grokking", f"{traj.run_dir} is a {type(cfg).kind!r} run, not a grokking one")
    chosen = {"progress": family(cfg, names)}
    data = make_data(cfg)
    if key_freqs is None:
        key_freqs = find_key_frequencies(traj, data)
    check(len(key_freqs) == traj.n_members,
          f"got key frequencies for {len(key_freqs)} members, the run has {traj.n_members}")
    masks = np.stack([key_mask(cfg.p, k) for k in key_freqs])  # [member, freq]
    results = analyze(traj, chosen, data, per_member={"key_mask": masks}, chunk_size=chunk_size)
    return results, [np.asarray(k) for k in key_freqs]
