"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

import dataclasses
import os
from pathlib import Path

import jax
import pytest

# two CPU devices, so data-parallel training runs as it does under `mi-jax` on a 2-core machine;
# everything else runs on the default device 0, as before
jax.config.update("jax_num_cpu_devices", 2)
# compiled programs are cached on disk and shared by the test workers: most tests train the same
# tiny configs, and compiling them again is most of a test's time
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

import mi_jax as mj


def pytest_configure(config):
    # the default suite compiles many small programs that then run for milliseconds: XLA's backend at
    # optimisation level 0 compiles them in ~2/3 of the time (the default suite cold: 310 -> 220 s), with
    # the same values up to rounding; the slow suite's long runs keep the default level
    if "not slow" in (config.option.markexpr or ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()


def tiny_grokking(**train_overrides) -> mj.GrokkingConfig:
    train = dataclasses.replace(
        mj.TrainConfig(steps=200, lr=3e-3, weight_decay=1.0, eval_every=25, ckpt_every=50, seed=0),
        **train_overrides,
    )
    return mj.GrokkingConfig(
        p=13, train_frac=0.5, data_seed=1,
        model=mj.TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64), train=train,
    )


@pytest.fixture
def tiny_cfg():
    return tiny_grokking()
