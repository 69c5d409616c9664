"""The benchmarks page is the data rendered: it cannot drift from the recorded rows, and a recorded
row carries everything the page and a reader need to judge it."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # record.py and render.py are scripts there, not a package

import record  # noqa: E402
import render  # noqa: E402


def test_page_is_the_rendered_data():
    assert render.PAGE.read_text() == render.render_page(), "run python benchmarks/render.py"


def test_every_recorded_row_has_every_field():
    for row in record.read():
        assert tuple(row) == record.FIELDS, row["name"]


def test_every_target_names_a_bound_or_none_and_its_figures():
    for name, declared in render.load_targets().items():
        assert set(declared) <= {"figure", "at_least", "at_most", "mi_jax", "peer", "peer_name", "also"}, name
        for target in render.judged(declared):
            assert "mi_jax" in target and ("peer" in target) == ("peer_name" in target), name
            assert not {"at_least", "at_most"} & set(target) or "figure" in target, name


def test_a_recorded_row_has_every_required_field(tmp_path):
    path = tmp_path / "benchmarks.jsonl"
    run = record.run_info(device="cpu")
    peer = {"numpy": "2.0.0"}
    record.append(path, record.make_row("tms_train", {"s_total": 3.5, "torch_s": 21.0, "speedup": 6.0}, run,
                                        record.now(), record.load(), peer=peer))
    (row,) = record.read(path)
    assert tuple(row) == record.FIELDS
    assert row["name"] == "tms_train" and row["figures"]["speedup"] == 6.0 and row["peer"] == peer
    assert row["date"].endswith("+00:00") and row["device"] == "cpu" and row["cores"] >= 1
    assert isinstance(row["loadavg_start"], float) and isinstance(row["loadavg_end"], float)
    assert row["jax"] and row["jaxlib"] and row["quality"] is None
    assert row["commit"] is None or (len(row["commit"]) >= 7 and isinstance(row["dirty"], bool))
    json.dumps(row)  # the page's renderer reads it back as JSON


def test_peer_versions_are_read_in_the_peers_python(monkeypatch):
    import peer_runs

    monkeypatch.setitem(peer_runs.PEER_VENVS, "here", (Path(sys.executable), ("pytest", "no-such-package")))
    versions = peer_runs.peer_versions("here")
    assert versions["pytest"] and versions["no-such-package"] is None


def test_a_row_that_does_not_count_stays_out_of_the_current_table():
    target = {"figure": "speedup", "at_least": 2, "mi_jax": "s_total", "peer": "torch_s", "peer_name": "torch"}
    row = dict.fromkeys(record.FIELDS) | {"name": "tms_train", "device": "cpu", "cores": 2, "commit": "abc1234"}
    good = row | {"date": "2026-01-01T00:00:00+00:00", "figures": {"s_total": 4.0, "torch_s": 12.0, "speedup": 3.0}}
    loaded = row | {"date": "2026-01-02T00:00:00+00:00", "figures": {"s_total": 9.0, "torch_s": 9.0, "speedup": 1.0},
                    "quality": "shared cores"}
    current = "\n".join(render.current([good, loaded], {"tms_train": target}))
    assert "| `tms_train` | 4.0 s | torch 12.0 s | 3.0x | >= 2x | yes | 2026-01-01 | abc1234 |" in current
    history = "\n".join(render.history("tms_train", [good, loaded], target, None))
    assert history.index("not counted: shared cores") < history.index("2026-01-01")  # newest first
