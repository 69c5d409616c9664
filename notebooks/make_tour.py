"""Build `notebooks/tour.ipynb` from the cell sources below, or check or execute it.

    python notebooks/make_tour.py             write tour.ipynb (no outputs, execution counts None)
    python notebooks/make_tour.py --check     exit 1 unless tour.ipynb has no outputs or execution
                                              counts and holds exactly the cells below
    python notebooks/make_tour.py --execute   run tour.ipynb top to bottom in a fresh kernel (nbclient),
                                              in a temporary folder; print the time; write nothing here
                                              (--save OUT.ipynb keeps the executed copy, with figures)

The notebook is edited here, as Python strings, so that its code is reviewed as code; the .ipynb is
committed stripped. Building needs nbformat, --execute also nbclient and ipykernel; --check reads the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tour.ipynb"

# (kind, source): "md" a markdown cell, "py" a code cell
CELLS: list[tuple[str, str]] = [
    ("md", """\
# A tour of mi_jax: training dynamics, measures over checkpoints, hooks and patching

This notebook trains two tiny runs on the CPU and reads them the way `mi_jax` reads every run: as a
checkpoint series whose parameters carry the axes `[time, member, ...]`.

1. A grokking run (a + b mod 53), three seeds trained as one program: load its checkpoints as a
   `Trajectory` and compute measures of every checkpoint and seed in one compiled call with
   `mj.analyze`.
2. An induction run (a 2-layer attention-only transformer): the hooked transformer, with
   TransformerLens hook names, to cache attention patterns and ablate a head.
3. Activation patching of every head at every checkpoint of the induction run, mapped over the
   series with `mj.analyze`: which heads carry the induction mechanism, and from which step.

Every run is written under a temporary folder, removed by the last cell. The whole notebook runs in
one to two minutes on 2 CPU cores, most of it compiling and training."""),
    ("py", """\
%matplotlib inline
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import mi_jax as mj

WORK = Path(tempfile.mkdtemp(prefix="mi_jax_tour_"))  # every run of this notebook is written here
WORK"""),
    ("md", """\
`import mi_jax` starts no JAX backend. The first `mj.train` (or `mj.analyze`) makes one JAX CPU
device per core (at most 4) before JAX starts, for data parallelism and for splitting checkpoints
over devices; nothing above has run a JAX computation, so that setting can still take effect.

## 1. A grokking run, three seeds at once

`grokking_small` is a + b mod 53 with half of the 53² pairs for training, on the model and optimiser
of Nanda et al. (1 layer, AdamW, weight decay 1.0). `mj.override` takes dotted keys with string
values, as `mi-jax train --set` does. Here the model is half the preset's width and the learning rate
three times larger, so a run memorises the training pairs in about 100 steps and generalises by step
~450: 500 steps take seconds. A snapshot of the parameters is written every 20 steps
(`train.ckpt_every`), and the train and test loss and accuracy are evaluated at the same steps.

`train.seeds` trains one model per seed, with the same data split and a different initialisation
each, as one vmapped program: a *seed ensemble*. Without it the run is solo (seed `train.seed`).
`mj.sweep` builds grids of settings the same way."""),
    ("py", """\
cfg = mj.override(mj.load_preset("grokking_small"), {
    "model.d_model": "64", "model.d_head": "16", "model.d_mlp": "256",
    "train.lr": "3e-3", "train.steps": "500", "train.ckpt_every": "20", "train.eval_every": "20",
    "train.seeds": "0,1,2",
})
final = mj.train(cfg, WORK / "grokking", wandb="off", progress=False)
final["test_acc"]     # one value per seed"""),
    ("md", """\
### The checkpoint series as a `Trajectory`

`mj.Trajectory.load` reads the run directory lazily. Every parameter leaf is `[time, member, ...]`,
one member per seed. A solo run has the same layout with one member, so code written for one run
also reads an ensemble: `traj.select_members([0])` is what a solo run of seed 0 loads as.
`traj.metrics` holds the evaluations, `[n_evals, member]` each, and `traj.at(i, m)` the parameters
of one model, read into memory."""),
    ("py", """\
traj = mj.Trajectory.load(WORK / "grokking")
print("steps     ", traj.steps.shape, traj.steps[:5], "...")            # [time]
print("W_E       ", traj.params["W_E"].shape)                           # [time, member, d_vocab, d_model]
print("W_in      ", traj.params["blocks"][0]["mlp"]["W_in"].shape)      # [time, member, d_model, d_mlp]
print("members   ", traj.members)                                      # each member's settings
print("test_acc  ", traj.metrics["test_acc"].shape)                     # [n_evals, member]
print("seed 0    ", traj.select_members([0]).params["W_E"].shape)       # a solo run's layout"""),
    ("py", """\
m = traj.metrics
fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.2))
for i in range(traj.n_members):
    ax_acc.plot(m["step"], m["test_acc"][:, i], color=f"C{i}", label=traj.member_label(i))
    ax_acc.plot(m["step"], m["train_acc"][:, i], color=f"C{i}", ls=":", lw=1)
    ax_loss.semilogy(m["step"], m["test_loss"][:, i], color=f"C{i}")
    ax_loss.semilogy(m["step"], m["train_loss"][:, i], color=f"C{i}", ls=":", lw=1)
ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy: test (solid), train (dotted)")
ax_loss.set(xlabel="step", ylabel="cross-entropy", title="loss: test (solid), train (dotted)")
ax_acc.legend()
fig.tight_layout()
plt.show()


def first_step(reached):  # the first evaluated step where reached [n_evals] holds (None: never)
    return int(m["step"][reached.argmax()]) if reached.any() else None


for i in range(traj.n_members):
    print(f"{traj.member_label(i)}: train accuracy 1 from step {first_step(m['train_acc'][:, i] == 1)}, "
          f"test accuracy >= 0.9 from step {first_step(m['test_acc'][:, i] >= 0.9)}, "
          f"final test loss {m['test_loss'][-1, i]:.3f}")"""),
    ("md", """\
Every seed reaches training accuracy 1 within about 100 steps while its test accuracy is near 0.5;
the test accuracy then climbs to ~0.99 with no change in the training accuracy. The training set is
memorised first and the general algorithm found later. The seeds follow the same course at slightly
different steps, and end at different test losses: one run is one draw.

### A measure of every checkpoint with `mj.analyze`

A *measure* is a pure function `(params, data) -> value` of one model. `mj.analyze(traj, measures)`
evaluates every measure at every checkpoint and member in one compiled program (`lax.map` over time,
`vmap` over members) and returns `{name: [time, member, ...]}`, the measure's own shape last. A
measure may return an array: `embedding_spectrum` below is `[freq]`, so its result is
`[time, member, freq]`.

- `weight_norm`: the sum of every squared parameter, the quantity weight decay pulls down.
- `embedding_spectrum`: the share of the embedding `W_E [a, d_model]` (the 53 number tokens) in each
  frequency `k = 1..26` of the real Fourier basis of Z_53. The algorithm Nanda et al. found
  represents each number by a few frequencies, so this spectrum becomes sparse as the model generalises."""),
    ("py", """\
from mi_jax.analysis import fourier

p = cfg.p
F, indicator = fourier.basis(p), fourier.freq_indicator(p)   # [comp, a], [comp, freq]: numpy constants


def weight_norm(params, data):
    return sum((w ** 2).sum() for w in jax.tree.leaves(params))


def embedding_spectrum(params, data):
    norms = fourier.freq_norms(params["W_E"][:p], F, indicator)   # [freq]
    return norms ** 2 / (norms ** 2).sum()


series = mj.analyze(traj, {"weight_norm": weight_norm, "embedding_spectrum": embedding_spectrum})
{name: value.shape for name, value in series.items()}"""),
    ("py", """\
spectrum = series["embedding_spectrum"]                     # [time, member, freq]
top5 = np.sort(spectrum, axis=-1)[..., -5:].sum(-1)          # [time, member]: share of the 5 largest frequencies

fig, (ax_norm, ax_top, ax_spec) = plt.subplots(1, 3, figsize=(14, 3.4))
for i in range(traj.n_members):
    ax_norm.plot(traj.steps, series["weight_norm"][:, i], color=f"C{i}", label=traj.member_label(i))
    ax_top.plot(traj.steps, top5[:, i], color=f"C{i}")
ax_norm.set(xlabel="step", ylabel="sum of squared weights", title="weight norm  [time, member]")
ax_top.set(xlabel="step", ylabel="share", ylim=(0, 1), title="top-5 frequency share of W_E")
ax_norm.legend()
image = ax_spec.imshow(spectrum[:, 0].T, aspect="auto", origin="lower", cmap="viridis",
                       extent=(traj.steps[0], traj.steps[-1], 0.5, spectrum.shape[-1] + 0.5))
ax_spec.set(xlabel="step", ylabel="frequency k", title="seed 0: W_E's share per frequency")
fig.colorbar(image, ax=ax_spec)
fig.tight_layout()
plt.show()
for i in range(traj.n_members):
    norm = series["weight_norm"][:, i]
    print(f"{traj.member_label(i)}: weight norm {norm[0]:.0f} at step 0, {norm.max():.0f} at step "
          f"{traj.steps[norm.argmax()]}, {norm[-1]:.0f} at step {traj.steps[-1]}; top-5 share {top5[0, i]:.2f} -> "
          f"{top5[-1, i]:.2f}, largest frequencies {np.argsort(spectrum[-1, i])[::-1][:5] + 1}")"""),
    ("md", """\
The weight norm rises while the models memorise and falls as the test accuracy climbs: weight decay
removes the memorising weights once the general solution carries the training loss. The embedding
concentrates on a few frequencies (the bright rows on the right): partly while the models memorise,
then steadily as they generalise, on a different set of frequencies for each seed. This is the
representation of the Fourier algorithm.

## 2. The hooked transformer: an induction run

`induction_2l` trains a 2-layer attention-only transformer (4 heads per layer) on random tokens
whose last L tokens repeat an earlier span; only an induction head (attend to the token after the
earlier copy of the current token, and copy it) predicts the repeat. Repeats here are 16 to 24
tokens long (the preset: 6 to 24), which brings the induction phase change forward to about step 350
(the preset's is at ~600).

`mj.apply(params, tokens, cfg, cache=[...], hooks={...})` runs one model. Activations are named as in
TransformerLens (`blocks.{layer}.attn.hook_pattern`, `blocks.{layer}.attn.hook_z`, ...); `mj.hook_names`
lists them. `cache` returns the named activations; `hooks` replaces each named activation by
`fn(activation)`. `apply` is pure, so it also runs inside `jit`, `vmap` and `grad`, and inside a measure."""),
    ("py", """\
ind_cfg = mj.override(mj.load_preset("induction_2l"), {
    "min_repeat_len": "16", "train.steps": "500", "train.ckpt_every": "20", "train.eval_every": "20",
})
mj.train(ind_cfg, WORK / "induction", wandb="off", progress=False)
ind = mj.Trajectory.load(WORK / "induction")
model = ind_cfg.transformer     # the TransformerConfig, with the task's n_ctx and vocabulary filled in
print(ind.params["blocks"][0]["attn"]["W_Q"].shape)   # [time, member, n_heads, d_model, d_head]
print([name for name in mj.hook_names(model) if name.startswith("blocks.0")])"""),
    ("md", """\
The probe sequences are `A A`: 24 random tokens, then the same 24 again (48 tokens, the model's
context). From the second copy on, the next token is the one after the current token's earlier copy.
Below, the final checkpoint caches the attention pattern of both layers, `[batch, head, query, key]`.
Two scores per head read the patterns: the *previous-token* score (the mean attention from each query
to the position just before it) and the *induction* score (the mean attention from each query in the
second copy to the position after its earlier copy, `query - 24 + 1`)."""),
    ("py", """\
span = ind_cfg.repeat_len                                   # 24
rng = np.random.default_rng(0)
A = rng.integers(0, ind_cfg.d_vocab, (16, span))
clean = np.concatenate([A, A], axis=1)                      # [batch, pos] = [16, 48]

params = ind.at(-1)                                         # the last checkpoint, member 0
names = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
logits, cache = mj.apply(params, jnp.asarray(clean), model, cache=names)
print("logits", logits.shape, " pattern", cache[names[0]].shape)   # [batch, pos, vocab], [batch, head, query, key]

queries = np.arange(1, 2 * span)
second = np.arange(span, 2 * span)
prev_score = np.asarray(cache[names[0]][:, :, queries, queries - 1].mean((0, 2)))        # [head] of layer 0
ind_score = np.asarray(cache[names[1]][:, :, second, second - span + 1].mean((0, 2)))    # [head] of layer 1
prev_head, ind_head = int(prev_score.argmax()), int(ind_score.argmax())
print("previous-token score, layer 0:", prev_score.round(2), "-> head", prev_head)
print("induction score, layer 1:     ", ind_score.round(2), "-> head", ind_head)"""),
    ("py", """\
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, layer, head, what in ((axes[0], 0, prev_head, "previous-token head"), (axes[1], 1, ind_head, "induction head")):
    ax.imshow(np.asarray(cache[f"blocks.{layer}.attn.hook_pattern"][0, head]), cmap="Blues", vmin=0, vmax=1)
    ax.axvline(span - 0.5, color="grey", lw=0.5)
    ax.axhline(span - 0.5, color="grey", lw=0.5)
    ax.set(xlabel="key position", ylabel="query position", title=f"L{layer}H{head}: {what}")
fig.suptitle("attention patterns of the final checkpoint on one sequence A A (A: positions 0-23)")
fig.tight_layout()
plt.show()"""),
    ("md", """\
Left: in the first copy the previous-token head attends from each position to the one before it (the
sub-diagonal); in the second copy its attention spreads out. Right: in the second copy the induction
head attends to the position after the current token's first occurrence, a diagonal 23 positions
below the main one; in the first copy, where the current token has no earlier occurrence, it attends
mostly to the first positions.

A hook on `blocks.0.attn.hook_z` (`[batch, pos, head, d_head]`, each head's output before `W_O`)
that sets one layer-0 head's output to zero removes that head: below, the loss on the second copy's
predictable tokens with each layer-0 head removed in turn. (`mi_jax.interventions.ablate_head(layer,
head)` returns the same hook dict.)"""),
    ("py", """\
predicted = np.arange(span, 2 * span - 1)     # queries in the second copy; each predicts clean[:, q + 1]


def copy_loss(logits):
    logp = jax.nn.log_softmax(logits[:, predicted], -1)
    return float(-jnp.take_along_axis(logp, jnp.asarray(clean[:, predicted + 1])[..., None], -1).mean())


print(f"as trained:          loss {copy_loss(logits):.3f}   (uniform guess: ln {ind_cfg.d_vocab} = {np.log(ind_cfg.d_vocab):.2f})")
for head in range(model.n_heads):
    ablated, _ = mj.apply(params, jnp.asarray(clean), model,
                          hooks={"blocks.0.attn.hook_z": lambda z, h=head: z.at[:, :, h].set(0.0)})
    print(f"L0H{head} zero-ablated: loss {copy_loss(ablated):.3f}")"""),
    ("md", """\
Removing any one layer-0 head raises the loss. Zero-ablation removes everything a head writes and
gives the later layers an input they never saw in training, so it measures more than the head's part
in induction and does not separate the heads well. Patching, next, changes only the information the
mechanism uses, and asks the question at every checkpoint.

## 3. Head patching over training

Activation patching runs the model on a *corrupted* input with one component's activation taken from
the *clean* run, and asks how much of the clean behaviour returns. Pairs: the clean `A A` sequences
above; corrupted, the same with every other token of the first copy (A_0, A_2, ...) redrawn. At a
query A_i of the second copy with i even, the token to copy (A_{i+1}) is intact, but the earlier
occurrence of A_i that points to it is gone, so an induction head no longer finds it. The metric is
the log-probability of the right next token at those queries, normalised per head:
0 = the corrupted run's value, 1 = the clean run's.

`mi_jax.interventions.head_patching_measure` binds the pairs and returns a measure of one model,
`{"head_patching": [layer, head]}` (each head's `hook_z` patched in turn, all heads in one `vmap`).
`mj.analyze` maps it over the checkpoints: `[time, member, layer, head]`. A second measure,
written with `mj.apply`, gives the unnormalised clean and corrupted metrics: before the model learns
induction the two coincide, and the normalised values divide by about zero."""),
    ("py", """\
from mi_jax.interventions import head_patching_measure

corrupted = clean.copy()
redrawn = np.arange(0, span, 2)                              # A_0, A_2, ... of the first copy
corrupted[:, redrawn] = np.random.default_rng(1).integers(0, ind_cfg.d_vocab, (len(clean), len(redrawn)))
positions = span + redrawn[redrawn + 1 < span]               # second-copy queries A_i, i even
answer = clean[:, positions + 1]                             # [batch, n_positions]: A_{i+1}


def answer_logprob(params, data):
    def metric(tokens):
        logits, _ = mj.apply(params, jnp.asarray(tokens), model)
        logp = jax.nn.log_softmax(logits[:, positions], -1)
        return jnp.take_along_axis(logp, jnp.asarray(answer)[..., None], -1).mean()
    return {"clean_metric": metric(clean), "corrupted_metric": metric(corrupted)}


patching = mj.analyze(ind, {
    "patching": head_patching_measure(model, clean, corrupted, answer, metric="logprob", positions=positions),
    "baseline": answer_logprob,
})
{name: value.shape for name, value in patching.items()}"""),
    ("py", """\
heads = patching["head_patching"][:, 0].reshape(len(ind.steps), -1)     # [time, layer * head], member 0
gap = patching["clean_metric"][:, 0] - patching["corrupted_metric"][:, 0]
shown = np.where(gap[:, None] > 0.5, heads, np.nan)                      # grey where clean ~ corrupted
labels = [f"L{layer}H{head}" for layer in range(model.n_layers) for head in range(model.n_heads)]

fig, (ax_map, ax_gap) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, height_ratios=(2, 1))
step = ind.steps[1] - ind.steps[0]
cmap = plt.get_cmap("RdBu_r").copy()
cmap.set_bad("0.85")
image = ax_map.imshow(shown.T, aspect="auto", cmap=cmap, vmin=-1, vmax=1, interpolation="nearest",
                      extent=(ind.steps[0] - step / 2, ind.steps[-1] + step / 2, len(labels) - 0.5, -0.5))
ax_map.set(yticks=range(len(labels)), yticklabels=labels,
           title="head patching over training: share of the clean log-prob restored  [time, layer * head]")
fig.colorbar(image, ax=[ax_map, ax_gap], fraction=0.03)
ax_gap.plot(ind.steps, patching["clean_metric"][:, 0], label="clean")
ax_gap.plot(ind.steps, patching["corrupted_metric"][:, 0], label="corrupted")
ax_gap.set(xlabel="step", ylabel="log-prob of answer")
ax_gap.legend()
plt.show()
print("clean - corrupted log-prob > 0.5 from step", ind.steps[np.argmax(gap > 0.5)] if (gap > 0.5).any() else None)
print("step", ind.steps[-1], "(last checkpoint)")
for layer in range(model.n_layers):
    print(f"  layer {layer}:", patching["head_patching"][-1, 0, layer].round(2))"""),
    ("md", """\
Until about step 320 the clean and corrupted log-probabilities coincide: the model does no induction
yet, and there is nothing to restore (the map is grey wherever the two differ by less than 0.5). From the phase change on they separate, and the map shows where the
clean behaviour comes from: of the layer-0 heads, the previous-token head found above restores by far
the largest share, a share that keeps growing after the phase change, while the others restore
little; in layer 1 the mechanism is spread over several heads, each restoring a part. (Path patching,
`mi_jax.interventions.path_patching_measure`, finds that the previous-token head acts through the
keys of the layer-1 heads: `experiments/results/patching.md`.) One compiled call computed all 8 heads
at all 26 checkpoints. `mi_jax.interventions` has the same over other sites (`patching_measure`: residual
stream, MLPs, q / k / v), path patching (`path_patching_measure`) and attribution patching.

The runs above are ordinary run directories: `mi-jax analyze DIR` writes the kind's standard report
for any of them. The last cell removes them."""),
    ("py", """\
import shutil

shutil.rmtree(WORK)"""),
]


def build():
    """The notebook, as an nbformat node: no outputs, execution counts None."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    for i, cell in enumerate(nb.cells):  # stable ids, so rebuilding changes nothing
        cell.id = f"cell-{i:02d}"
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb


def problems(path: Path = NOTEBOOK) -> list[str]:
    """Why the notebook at `path` is not as committed: a cell with outputs or an execution count, or
    cells other than CELLS (edited in the notebook, or CELLS edited without rebuilding). Reads the
    JSON alone: needs no nbformat."""
    nb = json.loads(path.read_text())
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has execution count {cell['execution_count']}")
    cells = [("md" if c["cell_type"] == "markdown" else "py", "".join(c["source"])) for c in nb["cells"]]
    if cells != CELLS:
        found.append(f"{path.name}'s cells differ from {Path(__file__).name}'s CELLS: edit CELLS and rebuild")
    return found


def text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def execute(timeout: int, save: Path | None) -> float:
    """Run the notebook in a fresh kernel from a temporary working folder -> seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="mi_jax_tour_cwd_") as cwd:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}})
        t0 = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - t0
    if save is not None:
        nbformat.write(nb, save)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="check tour.ipynb is stripped and up to date")
    ap.add_argument("--execute", action="store_true", help="run tour.ipynb in a fresh kernel")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (--execute)")
    ap.add_argument("--save", type=Path, help="write the executed notebook here (--execute)")
    args = ap.parse_args()
    if args.check:
        found = problems()
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    if args.execute:
        print(f"executed {NOTEBOOK.name} in {execute(args.timeout, args.save):.1f} s")
        return 0
    NOTEBOOK.write_text(text(build()))
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
