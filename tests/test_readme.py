"""The README's quick tour runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_tour_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, 3, 53)
    assert scope["cache"]["blocks.0.attn.hook_pattern"].shape == (1, 4, 3, 3)
    assert scope["series"]["embedding_norm"].shape == (len(scope["traj"].steps),)
    assert (tmp_path / "checkpoints" / "my_run" / "metrics.jsonl").exists()
