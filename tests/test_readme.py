"""The README's code runs as written: the quick tour, the kind of your own; the tour notebook is committed stripped."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_tour_runs_with_the_top_level_api_only(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    imports = [line for line in block.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import jax", "import mi_jax as mj"], "the tour needs no deep imports"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, 3, 53)
    assert scope["cache"]["blocks.0.attn.hook_pattern"].shape == (1, 4, 3, 3)
    assert scope["series"]["embedding_norm"].shape == (len(scope["traj"].steps), 1)
    assert (tmp_path / "checkpoints" / "my_run" / "metrics.jsonl").exists()
    assert (tmp_path / "checkpoints" / "my_run" / "analysis" / "grokking.npz").exists()
    assert any("key frequencies" in line for line in scope["lines"])


def test_importing_mi_jax_starts_no_jax_backend():
    code = ("import sys, mi_jax as mj; assert 'jax' not in sys.modules, 'import mi_jax imported jax'; "
            "cfg = mj.load_preset('grokking_small'); from jax._src import xla_bridge; "
            "assert not xla_bridge._backends, 'a backend started'; print(cfg.p, sorted(mj.__all__)[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "53"


def test_every_public_name_has_a_docstring():
    import mi_jax as mj

    missing = [name for name in mj.__all__ if not (getattr(mj, name).__doc__ or "").strip()]
    assert not missing, missing


KIND_OF_YOUR_OWN = """
import sys
import mi_jax as mj
import my_kinds

final = mj.train(my_kinds.ParityConfig(), sys.argv[1], wandb="off", progress=False)
lines = mj.analyze_run(sys.argv[1], wandb="off")
print(final["test_acc"], lines[-1])
"""


@pytest.mark.slow  # a fresh process: ~6 s; tests/fixtures/sparse_parity.py is the same kind, in the default suite
def test_the_kind_of_your_own_trains_and_analyses_as_written(tmp_path):
    text = README.read_text()
    block = re.search(r"## A kind of your own.*?```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "my_kinds.py").write_text(block)
    out = subprocess.run([sys.executable, "-c", KIND_OF_YOUR_OWN, str(tmp_path / "run")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    acc, *line = out.stdout.split()
    assert float(acc) > 0.95, "it learns the parity of 2 bits"
    start, end = float(line[1]), float(line[3])
    assert line[0] == "relevant_share" and end > start, "the first layer comes to weigh the 2 relevant bits"
    assert len(block.splitlines()) <= 45


def test_the_tour_notebook_is_committed_stripped_and_built_from_its_script():
    # .ci/run executes it (notebooks/make_tour.py --execute); here: no outputs, and the cells its script holds
    path = README.parent / "notebooks" / "make_tour.py"
    spec = importlib.util.spec_from_file_location("make_tour", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.problems() == []
