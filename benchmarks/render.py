"""Write `experiments/results/benchmarks.md` from the data: `python benchmarks/render.py [--check]`.

The data:
    experiments/results/benchmarks.jsonl      the recorded rows (`record.py`)
    experiments/results/design_choices.json   {"ideas", "choices"}: tables of what each idea and each design
                                              choice in the code was measured to give, each {"title",
                                              "caption", "columns", "rows"} with a date and commit a row;
                                              {"profiles"}: {benchmark: {"text", "date", "commit"}}, where
                                              its time goes
    TARGETS in each benchmarks/bench_*.py     {name: target}, read here without importing the module, a
                                              target being
        figure                 the figure of a row it is judged by (a ratio); absent where there is none
        at_least | at_most     the bound on that figure; absent where the benchmark has no target
        mi_jax                 mi_jax's figure, shown beside it
        peer, peer_name        the figure it is compared with, and whose (a peer or a baseline)
        also                   more targets of the same rows, [{figure, bound, mi_jax}] (the peer the same)

The page has one current table (the latest row that counts of each benchmark on each device), each
benchmark's history (every row, newest first) and the design-choice tables. `--check` writes
nothing and exits 1 when the page differs from what the data gives.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import record

HERE = Path(__file__).resolve().parent
RESULTS_DIR = record.RESULTS.parent
PAGE = RESULTS_DIR / "benchmarks.md"
DESIGN = RESULTS_DIR / "design_choices.json"

INTRO = """\
# Benchmarks

This page is written by `python benchmarks/render.py` from `benchmarks.jsonl`, the rows that
`python benchmarks/bench.py` records (one per benchmark run), the targets declared beside each
benchmark's code (`TARGETS` in `benchmarks/bench_*.py`) and `design_choices.json`; edit those, not
this page. Every comparison is measured side by side in one run, most of those against a peer
(TransformerLens, eager PyTorch, devinterp, each in its own venv: `benchmarks/peers/`) in
alternating rounds, a speedup then being the median of the per-round ratios. A commit marked `+` had uncommitted changes; rows
converted from the earlier hand-written page carry the commit that wrote their figures there, unless
the commit measured is known."""


def load_targets(bench_dir: Path = HERE) -> dict[str, dict]:
    """{benchmark: target} from every bench_*.py's TARGETS literal, in `bench.py --list` order."""
    targets = {}
    for path in sorted(bench_dir.glob("bench_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TARGETS" for t in node.targets):
                targets.update(ast.literal_eval(node.value))
    return targets


def counts(row: dict) -> bool:
    """Whether a row may stand in the current table (a row with a `quality` is history only)."""
    return row["quality"] is None


def unit(name: str) -> str:
    """The unit a figure's name ends in (the benchmarks name figures by it)."""
    if name.endswith("ms_per_step"):
        return " ms/step"
    if re.search(r"_per_s($|_)", name):
        return "/s"
    if name.startswith(("speedup", "throughput_gain", "ratio")):
        return "x"
    if name.startswith("s_"):  # s_total
        return " s"
    for suffix, text in (("_ms", " ms"), ("_s", " s"), ("_mb", " MB"), ("_pct", "%"), ("_pct_of_training", "%")):
        if name.endswith(suffix):
            return text
    return ""


def figure(row: dict, name: str | None) -> str:
    value = row["figures"].get(name) if name else None
    return "—" if value is None else f"{value}{unit(name)}"


def bound(target: dict) -> str:
    for key, sign in (("at_least", ">="), ("at_most", "<=")):
        if key in target:
            return f"{sign} {target[key]}{unit(target['figure'])}"
    return "—"


def met(row: dict, target: dict) -> str:
    value = row["figures"].get(target.get("figure"))
    if value is None or not ({"at_least", "at_most"} & target.keys()):
        return "—"
    ok = value >= target["at_least"] if "at_least" in target else value <= target["at_most"]
    return "yes" if ok else "no"


def commit(row: dict) -> str:
    return "—" if row["commit"] is None else row["commit"] + ("+" if row["dirty"] else "")


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], lines: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(x) for x in line) + " |" for line in lines)]


def latest(rows: list[dict]) -> dict | None:
    """The last recorded of the rows that count (rows of one date keep the order they were appended in)."""
    ranked = sorted((r for r in rows if counts(r)), key=lambda r: r["date"])
    return ranked[-1] if ranked else None


def judged(target: dict) -> list[dict]:
    """A benchmark's target and its `also` targets, each whole (the peer carried over)."""
    main = {k: v for k, v in target.items() if k != "also"}
    peer = {k: main[k] for k in ("peer", "peer_name") if k in main}
    return [main] + [{**peer, **extra} for extra in target.get("also", [])]


def current(rows: list[dict], targets: dict) -> list[str]:
    lines = []
    for name in names(rows, targets):
        mine = [r for r in rows if r["name"] == name]
        devices = sorted({r["device"] for r in mine}, key=lambda d: (d != "cpu", d)) or [None]
        for device in devices:
            for k, target in enumerate(judged(targets.get(name, {}))):
                label = f"`{name}`" + (f" ({target['figure']})" if k else "") + \
                        ("" if device in ("cpu", None) else f" ({device})")
                row = latest([r for r in mine if r["device"] == device])
                if row is None:
                    lines.append([label, "not recorded yet" if not mine else "no row that counts", "—", "—",
                                  bound(target), "—", "—", "—"])
                    continue
                peer = figure(row, target.get("peer"))
                against = "—" if peer == "—" else f"{target['peer_name']} {peer}"
                lines.append([label, figure(row, target.get("mi_jax")), against, figure(row, target.get("figure")),
                              bound(target), met(row, target), row["date"][:10], commit(row)])
    return ["## Current", "",
            "The latest row of each benchmark on each device, of the rows that count (one marked with a",
            "`quality` shows in its history only).", "",
            *table(["benchmark", "mi_jax", "against", "ratio", "target", "met", "date", "commit"], lines)]


def names(rows: list[dict], targets: dict) -> list[str]:
    """Benchmarks in `bench.py --list` order, then any recorded under a name no bench file declares."""
    return list(targets) + list(dict.fromkeys(r["name"] for r in rows if r["name"] not in targets))


def load_text(row: dict) -> str:
    start, end = row["loadavg_start"], row["loadavg_end"]
    return "" if start is None else f"{start}" + ("" if end is None else f" -> {end}")


def versions(row: dict) -> str:
    parts = [f"{row['device']}, {row['cores']} cores"]
    parts += [f"{lib} {row[lib]}" for lib in ("jax", "jaxlib") if row[lib]]
    parts += [f"{package} {version}" for package, version in (row["peer"] or {}).items()]
    return "; ".join(parts)


def figures_text(row: dict) -> str:
    """Every figure of a row as `name value`, lists and booleans as JSON writes them."""
    plain = lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool)  # noqa: E731
    return ", ".join(f"{k} {v if plain(v) else json.dumps(v)}" for k, v in row["figures"].items())


def describe(target: dict) -> str:
    """One sentence: what the benchmark is judged by, and against what."""
    shown = f"`{target['mi_jax']}`"
    if "peer" in target:
        shown += f" against `{target['peer']}` ({target['peer_name']})"
    if "figure" not in target:
        return f"No target; shown: {shown}."
    if bound(target) == "—":
        return f"No target; shown: `{target['figure']}`, {shown}."
    return f"Target: `{target['figure']}` {bound(target)}, {shown}."


def history(name: str, rows: list[dict], target: dict, profile: dict | None) -> list[str]:
    out = [f"### `{name}`", ""]
    if target:
        out += [" ".join(describe(t) for t in judged(target)), ""]
    mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r["date"])[::-1]  # ties: last appended first
    lines = []
    for row in mine:
        note = "; ".join(x for x in (None if counts(row) else f"not counted: {row['quality']}", row["note"]) if x)
        lines.append([row["date"][:16].replace("T", " "), commit(row), load_text(row), figures_text(row),
                      figure(row, target.get("figure")), versions(row), note])
    out += table(["date (UTC)", "commit", "load", "figures", "ratio", "device, versions", "note"], lines)
    if profile:
        out += ["", f"Where the time goes ({profile['date'][:10]}, {profile['commit']}): {profile['text']}"]
    return out


def design_table(part: dict) -> list[str]:
    lines = [[r[c] for c in part["columns"]] + [f"{r['date'][:10]} {r['commit']}"] for r in part["rows"]]
    return [f"### {part['title']}", "", part["caption"], "", *table([*part["columns"], "recorded"], lines)]


def render(rows: list[dict], targets: dict, design: dict) -> str:
    out = [INTRO, "", *current(rows, targets), "", "## History", "",
           "Every recorded row of each benchmark, newest first.", ""]
    for name in names(rows, targets):
        if any(r["name"] == name for r in rows):
            out += [*history(name, rows, targets.get(name, {}), design["profiles"].get(name)), ""]
    out += ["## What each design choice was measured to give", "", *design_table(design["ideas"]), "",
            *design_table(design["choices"])]
    return "\n".join(out) + "\n"


def render_page(results: Path = record.RESULTS, design: Path = DESIGN, bench_dir: Path = HERE) -> str:
    """The page the data gives."""
    return render(record.read(results), load_targets(bench_dir), json.loads(design.read_text()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the data's")
    args = parser.parse_args(argv)
    page = render_page()
    if args.check:
        same = PAGE.exists() and PAGE.read_text() == page
        if not same:
            print(f"render.py: {PAGE} differs from what the data gives; run python benchmarks/render.py",
                  file=sys.stderr)
        return 0 if same else 1
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
