"""SAEs over a run's checkpoints, each trained on the activations its own checkpoint makes of the task's
data: what `mi-jax sae` computes, as one measure family that `analyze` maps over [time, member].

At every SAE step the task draws a fresh training batch (`task.batch`, as in training), the checkpoint's
forward pass records the activation at the hook point (`task.hooked_loss` with a recording hook; the rest
of the pass is dead code that XLA drops), and `batch_size` rows of it, drawn with replacement, train the
SAE. Nothing is cached on disk. A task with instances (TMS, `INSTANCE_AXES = 1`) gets an SAE per instance,
and a grid of k (or of L1 coefficients) trains side by side on the same activations.

Per SAE, on a fixed batch of the task's data (`evaluation_seed`):
    mse, fve, l0, dead, dead_train, loss    as `sae.train_sae` reports them
    recovered_zero, recovered_mean          the fraction of the loss recovered with the SAE's reconstruction
                                            spliced in: (L_ablated - L_sae) / (L_ablated - L_clean), the
                                            activation ablated to zero or to its mean over the batch
    mmcs, mmcs_weighted                     against the task's `true_features` (toy models), when it has them
    feature_max_cosine                      and each true feature's best cosine with a decoder row [..., n_true]
    feature_frequency_fractions             grokking (a + b, a - b): each latent's activation over every (a, b),
                                            the fraction of its variance in each frequency's 2D block, as
                                            for the MLP's neurons [..., d_sae, freq]
    feature_answer_fraction                 and the fraction explained by the answer (a +- b mod p) alone
                                            [..., d_sae]
    decoder                                 the decoder rows [..., d_sae, d] (the report follows features from
                                            one checkpoint's SAE to the next: lineages)
Shapes: [*instance, *grid] per checkpoint; `analyze` adds [time, member] in front.

A transformer's hook points hold [batch, pos, d]: every position is a row, or only `position`'s (then the
SAE is spliced in at that position alone).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mi_jax.analysis import crosscoder as crosscoder_lib
from mi_jax.analysis import grokking as grokking_lib
from mi_jax.analysis import sae as sae_lib
from mi_jax.analysis.crosscoder import CrosscoderConfig
from mi_jax.analysis.sae import SAEConfig
from mi_jax.config import ConfigError, check, check_name
from mi_jax.models.fast import rough_mean
from mi_jax.tasks import make_task
from mi_jax.training.chunk import draw


@dataclasses.dataclass(frozen=True)
class SAESettings:
    """What `mi-jax sae` trains (`--set sae.k=8`, `--set ks=2,4,8`, `--set every=5`)."""

    sae: SAEConfig = SAEConfig()
    hook: str = ""  # "": the task's default hook point (the first of its `sae_hook_points`)
    position: int | None = None  # a transformer's token position (-1: the last); None: every position
    every: int = 1  # every n-th checkpoint (the last always kept)
    ks: tuple[int, ...] = ()  # a grid of k (topk, batchtopk), all trained in the same program
    l1_coefficients: tuple[float, ...] = ()  # a grid of L1 coefficients (relu)
    evaluation_seed: int = 1  # the fixed batch the splicing scores use
    inputs_per_step: int | None = None  # examples the task draws per SAE step (its train.batch_size); None: as trained
    crosscoder_checkpoints: int = 0  # > 0: also one crosscoder over this many checkpoints, evenly spaced
    crosscoder: CrosscoderConfig = CrosscoderConfig()
    crosscoder_member: int = 0  # whose checkpoints the crosscoder reads
    crosscoder_instance: int = 0  # and which instance (TMS)

    def __post_init__(self):
        check(self.every >= 1, f"every must be >= 1, got {self.every}")
        check(not (self.ks and self.l1_coefficients), "set a grid of ks or of l1_coefficients, not both")
        relu = self.sae.architecture == "relu"
        check(not self.ks or not relu, "a grid of ks needs a topk or batchtopk SAE (set sae.architecture)")
        check(not self.l1_coefficients or relu, "a grid of l1_coefficients needs sae.architecture=relu")
        for k in self.ks:  # each grid value as the config's own k would be checked
            check(0 < k <= self.sae.d_sae, f"k={k} must be in 1..d_sae={self.sae.d_sae}")
        for l1 in self.l1_coefficients:
            check(l1 > 0, f"the ReLU SAE needs a positive L1 coefficient, got {l1}")
        check(self.inputs_per_step is None or self.inputs_per_step > 0,
              f"inputs_per_step must be positive, got {self.inputs_per_step}")
        check(self.crosscoder_checkpoints != 1 and self.crosscoder_checkpoints >= 0,
              f"crosscoder_checkpoints must be 0 (none) or >= 2, got {self.crosscoder_checkpoints}")

    @property
    def dictionary(self) -> SAEConfig:
        """The SAE config every SAE trains with: `sae`, its k raised to the grid's largest (the static bound
        of the traced k's top-k)."""
        return dataclasses.replace(self.sae, k=max(self.ks)) if self.ks else self.sae

    @property
    def grid(self) -> tuple[str, tuple] | None:
        """("k" or "l1_coefficient", values) when a grid is set."""
        if self.ks:
            return "k", self.ks
        if self.l1_coefficients:
            return "l1_coefficient", self.l1_coefficients
        return None


def task_for(config, settings: SAESettings):
    """The task whose data the SAEs of a run with this config read: the run's own, drawing
    `settings.inputs_per_step` examples a step when set."""
    if settings.inputs_per_step is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=settings.inputs_per_step))
    return make_task(config)


def hook_point(task, settings: SAESettings) -> str:
    """The hook point the SAEs read: settings.hook, checked (one line naming the nearest), or the task's default;
    settings.position checked against its activations' positions."""
    kind = type(task.cfg).kind
    if not hasattr(task, "hooked_loss") or not hasattr(task, "sae_hook_points"):
        raise ConfigError(f"no SAEs for {kind} runs: the task has no hook points (hooked_loss, sae_hook_points)")
    points = task.sae_hook_points()
    hook = points[0] if not settings.hook else check_name(settings.hook, points, "hook point",
                                                          f" for an SAE of this {kind} model")
    if settings.position is not None:
        key, shared = jax.random.key(0), getattr(task, "shared_data", None)
        shape = jax.eval_shape(lambda: capture(task, task.init_params(key), draw(task, shared, key, 0), hook)).shape
        rows = shape[_instances(task):-1]  # [batch, pos] for a transformer
        check(len(rows) == 2, f"hook point {hook} has no token positions (activations {list(shape)}): set no position")
        check(-rows[1] <= settings.position < rows[1],
              f"position={settings.position} is out of range: {hook} has {rows[1]} positions")
    return hook


def task_shared(task):
    """The task's shared data (a corpus) as device arrays, or None."""
    shared = getattr(task, "shared_data", None)
    return jax.tree.map(jnp.asarray, shared) if shared else None


def capture(task, params: dict, batch, hook: str) -> jax.Array:
    """The activation at `hook` in the task's forward pass on `batch` ([*instance, ..., d])."""
    seen = []
    task.hooked_loss(params, batch, {hook: lambda a: seen.append(a) or a})
    return seen[0]


def _instances(task) -> int:
    return getattr(task, "INSTANCE_AXES", 0)


def at_position(act: jax.Array, position: int | None) -> jax.Array:
    """[..., pos, d] -> [..., d] at `position`; unchanged when None."""
    return act if position is None else act[..., position, :]


def _flat(act: jax.Array, instance_axes: int) -> jax.Array:
    """[*instance, *rows, d] -> [instance, row, d] (one instance when the task has none)."""
    return act.reshape((math.prod(act.shape[:instance_axes]), -1, act.shape[-1]))


def activation_rows(task, params: dict, shared, hook: str, n_rows: int, key: jax.Array, step,
                    position: int | None = None) -> jax.Array:
    """[instance, n_rows, d]: the activations at `hook` (at `position`) of a fresh training batch (drawn at
    (key, step)), rows drawn with replacement. The same (key, step) gives the same inputs to every checkpoint."""
    k_batch, k_rows = jax.random.split(key)
    act = at_position(capture(task, params, draw(task, shared, k_batch, step), hook), position)
    act = _flat(act, _instances(task))
    return act[:, jax.random.randint(k_rows, (n_rows,), 0, act.shape[1])]


def _grid_values(settings: SAESettings):
    grid = settings.grid
    return None if grid is None else jnp.asarray(grid[1], jnp.int32 if grid[0] == "k" else jnp.float32)


def train_saes(task, settings: SAESettings, hook: str, params: dict, shared=None) -> tuple[dict, dict]:
    """The SAEs of one checkpoint: (params with leaves [instance, *grid, ...], `train_sae`'s metrics
    [instance, *grid]), each trained on this checkpoint's activations at `hook`. Jittable; every checkpoint
    uses the same key (sae.seed), so one checkpoint's SAEs are those `sae_measures` trained for it."""
    cfg, grid, values = settings.dictionary, settings.grid, _grid_values(settings)
    train_key = jax.random.split(jax.random.key(cfg.seed))[0]
    rows = lambda kk, s: activation_rows(task, params, shared, hook, cfg.batch_size, kk, s, settings.position)  # noqa: E731

    def one(i, value):  # the SAE of instance i (at grid value `value`)
        over = {} if grid is None else {grid[0]: value}
        return sae_lib.train_sae(cfg, lambda kk, s: rows(kk, s)[i], train_key, **over)

    n_instances = jax.eval_shape(rows, train_key, 0).shape[0]
    train = one if grid is None else jax.vmap(one, (None, 0))
    return jax.vmap(train, (0, None))(jnp.arange(n_instances), values)


def sae_measures(task, settings: SAESettings, hook: str):
    """(the measure family fn(params, data) -> {"sae/NAME": [*instance, *grid, ...]}, its data) for `analyze`."""
    cfg, axes, grid, values = settings.dictionary, _instances(task), settings.grid, _grid_values(settings)
    shared = getattr(task, "shared_data", None)
    truth = getattr(task, "true_features", None)
    eval_key = jax.random.fold_in(jax.random.split(jax.random.key(cfg.seed))[1], settings.evaluation_seed)
    grid_name = grid[0] if grid else None
    per_sae = (lambda fn: jax.vmap(fn)) if grid is None else (lambda fn: jax.vmap(jax.vmap(fn, (0, None))))  # noqa: E731

    def measure(params, data):
        shared_now = data.get("shared") if data else None
        saes, metrics = train_saes(task, settings, hook, params, shared_now)
        batch = draw(task, shared_now, eval_key, 0)
        metrics.update(splicing_scores(task, params, batch, hook, cfg, saes, values, grid_name, settings.position))
        if truth is not None:
            true = _flat(truth(params, hook), axes)  # [instance, n, d]
            for name, fn in (("mmcs", sae_lib.mmcs), ("mmcs_weighted", sae_lib.mmcs_weighted),
                             ("feature_max_cosine", sae_lib.max_cosines)):
                metrics[name] = per_sae(fn)(saes["W_dec"], true)
        if _has_frequencies(task):
            metrics.update(feature_frequencies(task, params, hook, settings.position, cfg, saes, values, grid_name))
        metrics["decoder"] = saes["W_dec"]
        shape = jax.eval_shape(lambda: capture(task, params, batch, hook)).shape[:axes]
        return {f"sae/{k}": v.reshape(shape + v.shape[1:]) for k, v in metrics.items()}

    return measure, ({"shared": shared} if shared else None)


def _has_frequencies(task) -> bool:
    """Whether `feature_frequencies` applies: a grokking run over every (a, b) pair (a + b or a - b)."""
    return type(task.cfg).kind == "grokking" and task.cfg.op != "/"


def feature_frequencies(task, params: dict, hook: str, position: int | None, cfg: SAEConfig, saes: dict,
                        grid_values=None, grid_name: str | None = None) -> dict:
    """{feature_frequency_fractions [instance, (grid,) d_sae, freq], feature_answer_fraction [instance, (grid,)
    d_sae]} of a grokking run's SAEs: each latent's activation over every (a, b) at `position` (None: the
    `=` token), the fraction of its variance in each frequency's 2D block (`grokking.freq_fractions`, the
    neurons' measure of Nanda et al. 2023), and the fraction its mean per answer explains (the variance
    between the p groups of pairs with one answer). A latent that never fires has fractions 0."""
    data = grokking_lib.make_data(task.cfg)
    batch = (jnp.asarray(data["tokens"]), jnp.asarray(data["labels"]))
    act = at_position(capture(task, params, batch, hook), -1 if position is None else position)  # [pair, d]

    p = task.cfg.p
    answer = grokking_lib.PAIR_SUMS.index("residue" if task.cfg.op == "+" else "diff_residue")

    def one(sae, value):  # -> [d_sae, freq], [d_sae]
        latents = sae_lib.encode(cfg, sae, act, **({"k": value} if grid_name == "k" else {}))
        sums, total = grokking_lib.centred_sums(latents - rough_mean(latents), data, p)  # [4, p, d_sae], [d_sae]
        fractions = grokking_lib.freq_fractions(sums, total, data, p).T
        between = (sums[answer] ** 2).sum(0) / p  # p pairs per answer: Σ_answer p · mean²
        return fractions, between / jnp.where(total > 0, total, 1.0)

    per = jax.vmap(one, (0, None)) if grid_values is None else jax.vmap(jax.vmap(one, (0, 0)), (0, None))
    fractions, answer_fraction = per(saes, grid_values)
    return {"feature_frequency_fractions": fractions, "feature_answer_fraction": answer_fraction}


def train_crosscoder_over(task, stacked_params: dict, cfg, hook: str, instance: int = 0,
                          position: int | None = None) -> tuple[dict, dict]:
    """A crosscoder (`crosscoder.train_crosscoder`) over the checkpoints in stacked_params (leaves [T, ...],
    one member), on activations at `hook` (at `position`) of instance `instance`, every checkpoint fed the
    same inputs."""
    shared = task_shared(task)

    def acts(key, step):  # [batch, T, d]
        per = jax.vmap(lambda p: activation_rows(task, p, shared, hook, cfg.batch_size, key, step, position)[instance])
        return jnp.swapaxes(per(stacked_params), 0, 1)

    return jax.jit(lambda key: crosscoder_lib.train_crosscoder(cfg, acts, key))(jax.random.key(cfg.seed))


def splicing_scores(task, params: dict, batch, hook: str, cfg: SAEConfig, saes: dict, grid_values=None,
                    grid_name: str | None = None, position: int | None = None) -> dict:
    """{recovered_zero, recovered_mean} [instance] (or [instance, grid]): the fraction of the loss recovered
    with each SAE's reconstruction spliced in at `hook` (at `position` alone, when set),
    (L_ablated - L_sae) / (L_ablated - L_clean), the activation ablated to zero or to its mean over the
    batch's rows; nan where ablating costs nothing.
    saes: leaves [instance, ...] (or [instance, grid, ...] with grid_values [grid] of `grid_name`)."""
    axes = _instances(task)
    flat = _flat(at_position(capture(task, params, batch, hook), position), axes)

    def loss_with(edit):  # edit: [instance, row, d] -> the same; -> [instance]
        def replaced(a):
            old = at_position(a, position)
            new = edit(_flat(old, axes)).reshape(old.shape)
            return new if position is None else a.at[..., position, :].set(new)

        return jnp.reshape(task.hooked_loss(params, batch, {hook: replaced}), -1)

    clean = loss_with(lambda a: a)
    zero = loss_with(jnp.zeros_like)
    mean = loss_with(lambda a: jnp.broadcast_to(flat.mean(1, keepdims=True), a.shape))

    def spliced(sae_set, value):  # sae_set: leaves [instance, ...]
        over = {"k": value} if grid_name == "k" else {}
        return loss_with(lambda a: jax.vmap(lambda s, x: sae_lib.reconstruct(cfg, s, x, **over))(sae_set, a))

    if grid_values is None:
        with_sae = spliced(saes, None)  # [instance]
    else:  # the grid is the second axis of every SAE leaf
        with_sae = jax.vmap(spliced, (1, 0), 1)(saes, grid_values)  # [instance, grid]
        clean, zero, mean = clean[:, None], zero[:, None], mean[:, None]
    recovered = lambda ablated: (ablated - with_sae) / jnp.where(ablated == clean, jnp.nan, ablated - clean)  # noqa: E731
    return {"recovered_zero": recovered(zero), "recovered_mean": recovered(mean)}
