"""The snapshot series on disk: zarr arrays that grow, shrink to half precision, load lazily and stream
into the analysis unchanged; run dirs of the older .npy layout load and convert."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mi_jax as mj
from mi_jax import cli
from conftest import tiny_grokking
from mi_jax import config as config_lib
from mi_jax.analysis.core import analyze, analyze_params
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io import series
from mi_jax.trees import flatten, unflatten


def random_series(n_time: int, n_members: int, seed: int = 0) -> dict:
    """Random params {name: [time, member, ...]} of a small model's shapes."""
    rng = np.random.default_rng(seed)
    shapes = {"W_E": (14, 32), "b_U": (14,), "blocks.0.attn.W_Q": (2, 32, 16)}
    return {k: rng.normal(size=(n_time, n_members, *s)).astype(np.float32) for k, s in shapes.items()}


def run_dir_with_config(path: Path, n_members: int) -> Path:
    path.mkdir(parents=True)
    seeds = tuple(range(n_members)) if n_members > 1 else None
    (path / run_dir_lib.CONFIG).write_text(config_lib.dumps(tiny_grokking(seeds=seeds)))
    return path


def write_npy_run(path: Path, flat: dict, steps: list[int], member_axis: bool = True) -> Path:
    """A run dir in the older layout: one .npy per parameter and a CRC32 per row in index.json."""
    run_dir_with_config(path, 1)
    snap = path / run_dir_lib.SNAPSHOTS
    snap.mkdir()
    arrays = {k: v if member_axis else v[:, 0] for k, v in flat.items()}
    for name, value in arrays.items():
        np.save(snap / f"{name}.npy", value)
    crcs = [series._row_crc([arrays[k] for k in sorted(arrays)], row) for row in range(len(steps))]
    layout = {"layout": series.MEMBER_LAYOUT} if member_axis else {}
    (snap / "index.json").write_text(json.dumps({"steps": steps, "crc32": crcs, **layout}))
    return path


def write_series(path: Path, flat: dict, steps: list[int], **options) -> Path:
    writer = series.SeriesWriter.create(path / run_dir_lib.SNAPSHOTS, {k: v[0] for k, v in flat.items()}, capacity=2,
                                        **options)
    for row, step in enumerate(steps):
        writer.write(step, {k: v[row] for k, v in flat.items()})
    writer.write_index()
    return path


def test_an_old_npy_run_dir_loads_and_converts_to_the_same_series(tmp_path):
    flat = random_series(3, 1)
    run = write_npy_run(tmp_path / "old", flat, [0, 50, 100], member_axis=False)  # a solo run of before members
    before = mj.Trajectory.load(run, on_corrupt="raise")
    assert before.params["W_E"].shape == (3, 1, 14, 32)
    np.testing.assert_array_equal(before.params["blocks"][0]["attn"]["W_Q"], flat["blocks.0.attn.W_Q"])

    assert cli.main(["convert", str(run)]) == 0
    assert not list((run / run_dir_lib.SNAPSHOTS).glob("*.npy"))
    assert series.read_index(run / run_dir_lib.SNAPSHOTS)["layout"] == series.ZARR_LAYOUT
    after = mj.Trajectory.load(run, on_corrupt="raise")
    assert list(after.steps) == [0, 50, 100]
    for name, value in flat.items():
        np.testing.assert_array_equal(flatten(after.params)[name], value)
    assert cli.main(["convert", str(run)]) == 2  # already converted: one line, nothing rewritten


def test_an_old_run_dirs_corrupt_row_is_still_named_and_skipped(tmp_path):
    run = write_npy_run(tmp_path / "old", random_series(3, 1), [0, 50, 100])
    w_e = np.load(run / run_dir_lib.SNAPSHOTS / "W_E.npy", mmap_mode="r+")
    w_e[1] += 1.0
    w_e.flush()
    del w_e
    with pytest.warns(UserWarning, match="step 50"):
        assert list(mj.Trajectory.load(run).steps) == [0, 100]
    (run / run_dir_lib.SNAPSHOTS / "b_U.npy").write_bytes((run / run_dir_lib.SNAPSHOTS / "b_U.npy").read_bytes()[:60])
    with pytest.raises(mj.CheckpointError, match="b_U.npy"):
        mj.Trajectory.load(run)


def test_resuming_an_old_run_dir_converts_it_and_writes_on_past_its_capacity(tmp_path):
    flat = random_series(4, 1)
    run = write_npy_run(tmp_path / "old", {k: v[:2] for k, v in flat.items()}, [0, 50])
    writer = series.SeriesWriter.open(run / run_dir_lib.SNAPSHOTS, 2, {k: v[0] for k, v in flat.items()}, capacity=2)
    writer.write(100, {k: v[2] for k, v in flat.items()})
    writer.write(150, {k: v[3] for k, v in flat.items()})  # beyond the capacity of 2
    writer.write_index()
    traj = mj.Trajectory.load(run, on_corrupt="raise")
    assert list(traj.steps) == [0, 50, 100, 150] and writer.rows == 4
    np.testing.assert_array_equal(traj.params["W_E"], flat["W_E"])


def test_half_precision_compressed_storage_reads_back_float32(tmp_path):
    flat = random_series(5, 2)
    run = write_series(run_dir_with_config(tmp_path / "run", 2), flat, [0, 1, 2, 3, 4],
                       dtype="bfloat16", compression="zstd")
    meta = json.loads((run / run_dir_lib.SNAPSHOTS / "W_E" / "zarr.json").read_text())
    assert meta["data_type"] == "bfloat16" and [c["name"] for c in meta["codecs"]] == ["bytes", "zstd", "crc32c"]
    traj = mj.Trajectory.load(run, on_corrupt="raise")
    w_e = np.asarray(traj.params["W_E"])
    assert w_e.dtype == np.float32 and w_e.shape == (5, 2, 14, 32)
    np.testing.assert_allclose(w_e, flat["W_E"], rtol=2**-8)  # bfloat16 keeps 8 bits of mantissa
    assert not np.array_equal(w_e, flat["W_E"])


def test_a_loaded_series_is_lazy_until_read(tmp_path):
    flat = random_series(4, 2)
    run = write_series(run_dir_with_config(tmp_path / "run", 2), flat, [0, 10, 20, 30])
    traj = mj.Trajectory.load(run, verify=False)
    w_q = traj.params["blocks"][0]["attn"]["W_Q"]
    assert isinstance(w_q, series.LazyArray) and w_q.shape == (4, 2, 2, 32, 16) and w_q.dtype == np.float32
    assert type(traj.at(-1, 1)["W_E"]) is np.ndarray  # one model, read
    np.testing.assert_array_equal(traj.at(-1, 1)["W_E"], flat["W_E"][-1, 1])
    every_other = traj.select(slice(None, None, 2)).select_members([1])
    assert isinstance(every_other.params["W_E"], series.LazyArray)
    np.testing.assert_array_equal(every_other.params["W_E"], flat["W_E"][::2, [1]])
    assert np.all((traj.params["b_U"] == 0) == (flat["b_U"] == 0))
    eager = traj.materialize()
    assert type(eager.params["W_E"]) is np.ndarray
    np.testing.assert_array_equal(eager.params["b_U"], flat["b_U"])


def test_member_sharded_params_are_written_one_chunk_per_device(tmp_path):
    flat = random_series(2, 2)
    mesh = Mesh(np.array(jax.devices()[:2]), ("members",))
    sharded = lambda row: {k: jax.device_put(v[row], NamedSharding(mesh, PartitionSpec("members"))) for k, v in flat.items()}  # noqa: E731
    run = run_dir_with_config(tmp_path / "run", 2)
    writer = series.SeriesWriter.create(run / run_dir_lib.SNAPSHOTS, sharded(0), capacity=2)
    for row in range(2):
        writer.write(row, sharded(row))
    writer.write_index()
    chunks = sorted(p.relative_to(run / run_dir_lib.SNAPSHOTS / "W_E").as_posix()
                    for p in (run / run_dir_lib.SNAPSHOTS / "W_E").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunks == ["c/0/0/0/0", "c/0/1/0/0", "c/1/0/0/0", "c/1/1/0/0"]  # [row, member block, ...]
    np.testing.assert_array_equal(mj.Trajectory.load(run, on_corrupt="raise").params["W_E"], flat["W_E"])


def test_streamed_analysis_equals_the_whole_series_at_once(tmp_path):
    flat = random_series(7, 2, seed=3)
    run = write_series(run_dir_with_config(tmp_path / "run", 2), flat, list(range(7)))
    traj = mj.Trajectory.load(run, on_corrupt="raise")

    def measures():  # a nonlinear function of several leaves
        return {"score": lambda p, _: (jax.nn.softmax(p["W_E"] @ p["blocks"][0]["attn"]["W_Q"][0]) ** 2).sum(0),
                "bias": lambda p, _: p["b_U"].max()}

    whole = analyze_params(unflatten(flat), measures())
    step_bytes = sum(v[0].nbytes for v in flat.values())
    streamed = analyze(traj, measures(), block_bytes=2 * step_bytes)  # blocks of 2 checkpoints, 1 per device
    assert streamed["score"].shape == (7, 2, 16)
    for name in whole:
        np.testing.assert_array_equal(streamed[name], whole[name])


def test_an_unverified_load_names_a_missing_snapshot_when_it_is_read(tmp_path):
    flat = random_series(3, 1)
    run = write_series(run_dir_with_config(tmp_path / "run", 1), flat, [0, 50, 100])
    (chunk,) = [p for p in (run / run_dir_lib.SNAPSHOTS / "b_U" / "c" / "1").rglob("*") if p.is_file()]
    chunk.unlink()
    traj = mj.Trajectory.load(run, verify=False)  # opens the arrays, reads nothing
    np.testing.assert_array_equal(traj.at(2)["b_U"], flat["b_U"][2, 0])
    with pytest.raises(mj.CheckpointError, match="b_U.*missing"):
        traj.at(1)


def test_an_analysis_out_of_device_memory_halves_its_chunk_until_it_fits(monkeypatch):
    """A device that cannot hold 16 checkpoints' activations (16 x 8 members of a 512-token model on a
    GPU shared by four processes did not) gets 8, 4, ...: the same results, one warning a halving."""
    from mi_jax.analysis import core

    flat = random_series(5, 2, seed=4)
    measures = {"bias": lambda p, _: p["b_U"].max()}
    tried = []
    map_over_time = core._map_over_time

    def small_device(per_time, params, extra, chunk_size, block_bytes, fits=2):
        tried.append(chunk_size)
        if chunk_size > fits:
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 67.12GiB")
        return map_over_time(per_time, params, extra, chunk_size, block_bytes)

    expected = analyze_params(unflatten(flat), measures, chunk_size=1)
    monkeypatch.setattr(core, "_map_over_time", small_device)
    with pytest.warns(UserWarning) as warned:
        out = analyze_params(unflatten(flat), measures, chunk_size=8)
    assert tried == [8, 4, 2]
    assert [str(w.message).split("; ")[1] for w in warned] == [f"trying again with {n} checkpoint(s) a batch" for n in (4, 2)]
    np.testing.assert_allclose(out["bias"], expected["bias"])
    tried.clear()  # a device too small for one checkpoint: its error, once nothing is left to halve
    monkeypatch.setattr(core, "_map_over_time", lambda *args: small_device(*args, fits=0))
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"), pytest.warns(UserWarning):
        analyze_params(unflatten(flat), measures, chunk_size=4)
    assert tried == [4, 2, 1]
