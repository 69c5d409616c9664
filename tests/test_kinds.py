"""A kind of one's own: defined in a module outside the package, it trains, resumes, sweeps, loads and
analyses like a built-in kind, and a run of it finds its kind again in a fresh process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import config as config_lib
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.tasks import config_dict, find_kind, make_task
from mi_jax.training import loop

FIXTURE = Path(__file__).parent / "fixtures" / "sparse_parity.py"


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """The sparse-parity kind, imported from a folder of the user's (not the package, not the tests)."""
    folder = tmp_path_factory.mktemp("user_code")
    shutil.copy(FIXTURE, folder / "sparse_parity.py")
    sys.path.insert(0, str(folder))
    import sparse_parity

    yield sparse_parity, folder
    sys.path.remove(str(folder))


def fresh_process(code: str, *args, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath) if pythonpath else ""}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_users_kind_trains_resumes_sweeps_and_analyses_like_a_built_in(user_module, tmp_path):
    sparse_parity, _ = user_module
    cfg = mj.override(sparse_parity.ParityConfig(), {"train.steps": "200", "train.chunk_steps": "50"})
    # config.json names the kind and the module it comes from
    mj.train(cfg, tmp_path / "whole", wandb="off", progress=False)
    saved = json.loads((tmp_path / "whole" / run_dir_lib.CONFIG).read_text())
    assert saved["kind"] == "sparse_parity" and saved["kind_source"]["module"] == "sparse_parity"
    # stopped after 2 of 4 chunks, then resumed: bit-identical to the uninterrupted run
    cut = tmp_path / "cut"
    cut.mkdir()
    run_dir_lib.write_config(cut, config_dict(cfg))
    loop.train_task(make_task(cfg), cut, progress=False, stop_after_chunks=2)
    mj.resume(cut, wandb="off", progress=False)
    a, b = mj.Trajectory.load(cut, on_corrupt="raise"), mj.Trajectory.load(tmp_path / "whole")
    assert a.steps.tolist() == b.steps.tolist() == [0, 50, 100, 150, 200]
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert np.array_equal(x, y)
    # a sweep over the learning rate and two seeds: one program
    sweep = mj.sweep(cfg, {"train.lr": ["3e-3", "1e-2"]}, tmp_path / "sweep", seeds=(0, 1), wandb="off",
                     progress=False)
    assert len(sweep.trajectories) == 1 and sweep.trajectories[0].params["W_in"].shape[:2] == (5, 4)
    # measures over the series, and `mi-jax analyze`'s report: the kind's own
    share = mj.analyze(b, {"share": sparse_parity.relevant_share}, {"relevant": np.float32([1, 1] + [0] * 8)})
    assert share["share"].shape == (5, 1) and share["share"][-1, 0] > share["share"][0, 0]
    lines = mj.analyze_run(tmp_path / "whole", wandb="off")
    assert any(line.startswith("wrote") and "sparse_parity.npz" in line for line in lines), lines
    assert (tmp_path / "whole" / "analysis" / "training_curves.png").exists()


RESUME_ELSEWHERE = """
import sys
import mi_jax as mj
mj.resume(sys.argv[1], wandb="off", progress=False)
print(type(mj.Trajectory.load(sys.argv[1]).config).__module__)
"""


@pytest.mark.slow  # two fresh processes: ~10 s; the kind's in-process life cycle is in the default suite
def test_a_fresh_process_finds_the_kind_by_its_module_or_else_its_file(user_module, tmp_path):
    sparse_parity, folder = user_module
    cfg = mj.override(sparse_parity.ParityConfig(), {"train.steps": "100", "train.chunk_steps": "50"})
    run = tmp_path / "run"
    run.mkdir()
    run_dir_lib.write_config(run, config_dict(cfg))
    loop.train_task(make_task(cfg), run, progress=False, stop_after_chunks=1)
    by_file = tmp_path / "by_file"
    shutil.copytree(run, by_file)
    # the module importable (on the path): imported by name
    done = fresh_process(RESUME_ELSEWHERE, run, pythonpath=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "sparse_parity" and mj.Trajectory.load(run).steps.tolist() == [0, 50, 100]
    # not on the path (a preset file, a notebook's folder): loaded from the file config.json names
    done = fresh_process(RESUME_ELSEWHERE, by_file)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "mi_jax_kind_sparse_parity"
    # neither: one line that says where the kind was to come from
    data = json.loads((by_file / run_dir_lib.CONFIG).read_text())
    data.update(kind="parity_gone", kind_source={"module": "gone_away", "file": str(tmp_path / "gone_away.py")})
    (by_file / run_dir_lib.CONFIG).write_text(json.dumps(data))
    with pytest.raises(mj.ConfigError, match=r"^unknown experiment kind 'parity_gone': module 'gone_away' cannot be "
                                             r"imported \(ModuleNotFoundError: No module named 'gone_away'\)$"):
        mj.Trajectory.load(by_file)


ENTRY_POINT = """
from mi_jax.tasks import find_kind
kind = find_kind("parity_by_entry_point")
print(kind.name, kind.module)
"""


@pytest.mark.slow  # a fresh process: ~4 s
def test_an_installed_package_offers_its_kind_through_an_entry_point(tmp_path):
    source = FIXTURE.read_text().replace('"sparse_parity"', '"parity_by_entry_point"')
    (tmp_path / "parity_package.py").write_text(source)
    info = tmp_path / "parity_package-0.1.dist-info"  # what installing a package with this entry point leaves
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parity-package\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mi_jax.kinds]\nparity_by_entry_point = parity_package\n")
    done = fresh_process(ENTRY_POINT, pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["parity_by_entry_point", "parity_package"]


def test_an_unknown_kind_or_a_malformed_one_is_one_line(user_module):
    sparse_parity, _ = user_module
    with pytest.raises(mj.ConfigError, match=r"^unknown experiment kind 'no_such_kind' \(known: .*boolean_and.*"
                                             r"register a kind of your own with mj.register_kind"):
        find_kind("no_such_kind")
    with pytest.raises(mj.ConfigError, match="already registered by sparse_parity; give yours another name"):
        mj.register_kind(type("Other", (sparse_parity.ParityConfig,), {}), sparse_parity.ParityTask)
    with pytest.raises(mj.ConfigError, match="lacks batch, evaluate"):
        mj.register_kind(sparse_parity.ParityConfig, type("Half", (), {"init_params": print, "loss": print}))
    plain = type("Plain", (), {"kind": "plain"})
    with pytest.raises(mj.ConfigError, match="must be a dataclass"):
        mj.register_kind(plain, sparse_parity.ParityTask)


LOAD_ONLY = """
import sys
import mi_jax as mj
traj = mj.Trajectory.load(sys.argv[1])
print(len(traj), " ".join(sorted(m for m in sys.modules if m.startswith(("mi_jax.reports", "mi_jax.plots", "matplotlib")))))
"""


def test_loading_a_series_imports_no_reports_plots_or_matplotlib(tmp_path):
    from conftest import tiny_grokking

    mj.train(tiny_grokking(steps=50), tmp_path / "run", wandb="off", progress=False)
    done = fresh_process(LOAD_ONLY, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2"], f"loading imported: {done.stdout}"


def test_the_declared_layers_hold():
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter)], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "Contracts: 1 kept, 0 broken." in done.stdout, done.stdout[-3000:]


def test_config_json_of_a_built_in_kind_names_no_source(tiny_cfg):
    data = config_dict(tiny_cfg)
    assert data["kind"] == "grokking" and "kind_source" not in data
    assert config_lib.from_dict(mj.GrokkingConfig, data) == tiny_cfg
