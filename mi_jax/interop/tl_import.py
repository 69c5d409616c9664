"""A TransformerLens grokking series (the Grokking demo's file) as a mi_jax grokking run.

`grokking_config(series)` gives the experiment config of the imported weights (p from the
vocabulary, the file's own train split as explicit `train_indices`); `write_run_dir` writes the
series as a run directory that `Trajectory.load` and every mi_jax analysis read like a run of its own;
`import_run` is the whole of `mi-jax import`.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from mi_jax.config import check
from mi_jax.interop.tl_series import ImportedSeries, read_series
from mi_jax.interop.transformer_lens import expected_shapes, tl_config_fields
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.series import SeriesWriter
from mi_jax.tasks import config_dict
from mi_jax.tasks.grokking import N_INPUT_TOKENS, GrokkingConfig, all_pairs
from mi_jax.training.config import TrainConfig
from mi_jax.trees import flatten


def series_schedule(steps: np.ndarray, has_metrics: bool) -> TrainConfig:
    """The TrainConfig bookkeeping of a series: steps = the last step, ckpt_every = the steps' common
    divisor, eval_every = 1 where the file logs a loss every step. Optimiser settings stay the defaults
    (a TL file does not record them)."""
    every = math.gcd(*(int(s) for s in steps))
    check(every >= 1, "the series has no step after step 0, so no training schedule to describe")
    return TrainConfig(steps=int(steps[-1]), ckpt_every=every, eval_every=1 if has_metrics else every)


def grokking_config(series: ImportedSeries, op: str = "+", train: TrainConfig | None = None) -> GrokkingConfig:
    """The mi_jax grokking config of a TL grokking series.

    p = the model's d_vocab_out (inputs a, b, = with = the token p); the split is the file's
    train_indices (sorted), train_frac their share of the pairs; `train` defaults to `series_schedule`.
    One ConfigError line when the series is not a grokking model or carries no split.
    """
    m = series.model
    p = m.d_vocab_out
    check(
        m.d_vocab == p + 1 and m.n_ctx >= N_INPUT_TOKENS,
        f"{series.source} is not a grokking model (d_vocab={m.d_vocab}, d_vocab_out={p}, n_ctx={m.n_ctx}; "
        f"expected d_vocab = d_vocab_out + 1 and n_ctx >= {N_INPUT_TOKENS})",
    )
    check(series.train_indices is not None, f"{series.source} has no train_indices, so no train/test split to import")
    train_ids = np.sort(series.train_indices)
    n_pairs = len(all_pairs(p, op)[1])
    if series.test_indices is not None:
        rest = np.setdiff1d(np.arange(p * p), train_ids)
        if op == "/":
            rest = rest[rest % p != 0]  # division has no b = 0 pairs
        check(
            np.array_equal(np.sort(series.test_indices), rest),
            f"{series.source}: test_indices are not the pairs outside train_indices",
        )
    return GrokkingConfig(
        p=p, op=op, train_frac=len(train_ids) / n_pairs, train_indices=tuple(int(i) for i in train_ids),
        model=m, train=train or series_schedule(series.steps, bool(series.metrics)),
    )


def write_run_dir(series: ImportedSeries, cfg: GrokkingConfig, out_dir: str | Path) -> Path:
    """Write the series as a mi_jax run dir: config.json, snapshots/ (every checkpoint), metrics.jsonl.

    `out_dir` must be absent or empty. There is no resumable train state (a TL file has no optimiser state).
    """
    out_dir = Path(out_dir)
    check(not (out_dir.exists() and any(out_dir.iterdir())), f"run dir {out_dir} already exists and is not empty")
    shapes = {k: np.shape(v)[1:] for k, v in flatten(series.params).items()}
    check(shapes == expected_shapes(cfg.transformer), f"the config's model does not fit the weights of {series.source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_dir_lib.lock(out_dir, "importing"):
        run_dir_lib.write_config(out_dir, config_dict(cfg))
        member = lambda i: jax.tree.map(lambda x: np.asarray(x[i])[None], series.params)  # noqa: E731  [member 1, ...]
        snapshots = SeriesWriter.create(out_dir / run_dir_lib.SNAPSHOTS, member(0), len(series.steps))
        for i, step in enumerate(series.steps):
            snapshots.write(int(step), member(i))
        snapshots.write_index()
        run_dir_lib.append_metrics(out_dir, series.metrics)
    return out_dir


def import_run(src, out, cfg=None, op: str = "+") -> tuple[ImportedSeries, object, Path]:
    """A TransformerLens checkpoint series (a .pth/.pt file, or a folder of per-step state dicts,
    safetensors or npz files) written as the run dir `out` -> (the series, the run's config, out).

    `cfg`: the run's config, whose model must fit the weights (any kind with a transformer); None: the
    file must be a grokking series that carries its train/test split, with operation `op`."""
    if cfg is None:
        series = read_series(src)
        cfg = grokking_config(series, op=op)
    else:
        check(hasattr(cfg, "transformer"), f"a {type(cfg).kind} config has no transformer to import weights into")
        series = read_series(src, tl_config=tl_config_fields(cfg.transformer))
    return series, cfg, write_run_dir(series, cfg, out)
