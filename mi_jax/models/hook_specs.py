"""Training-time interventions written as strings (for a config's list of interventions) -> a hooks dict.

Forms (HOOK is a hook-point name, L a layer, H a head):

    ablate_head:L.H[:mean]          zero (or batch-mean) ablate head H of layer L (its hook_z)
    ablate_neurons:L:N1,N2,...      zero-ablate MLP neurons of layer L (mlp.hook_post)
    zero:HOOK   mean:HOOK           replace the activation by 0, or by its mean over the batch
    project_off:HOOK:BASIS          remove the subspace spanned by the rows of an orthonormal [k, d] basis
    project_onto:HOOK:BASIS         keep only that subspace
                                    (BASIS: a name in `bases`, else a .npy file of the [k, d] array)

    parse_interventions(("ablate_head:0.1", "zero:blocks.0.hook_mlp_out"), cfg)  ->  {hook_name: fn}

Several interventions on one hook point run in the order given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax.config import check
from mi_jax.models import ablation as abl
from mi_jax.models.names import check_hook_name, check_layer_head
from mi_jax.models import transformer as tfm

FORMS = "ablate_head:L.H[:mean], ablate_neurons:L:N1,N2, zero:HOOK, mean:HOOK, project_off:HOOK:BASIS, project_onto:HOOK:BASIS"


def _int(text: str, spec: str) -> int:
    check(text.strip().lstrip("-").isdigit(), f"training intervention {spec!r}: {text!r} is not an integer")
    return int(text)


def _basis(ref: str, bases: dict, spec: str) -> np.ndarray:
    if ref in bases:
        return np.asarray(bases[ref], np.float32)
    known = ", ".join(sorted(bases)) or "none given"
    check(
        Path(ref).suffix == ".npy" and Path(ref).is_file(),
        f"training intervention {spec!r}: basis {ref!r} is neither a known basis ({known}) nor a .npy file",
    )
    return np.load(ref).astype(np.float32)


def parse_intervention(spec: str, cfg: tfm.TransformerConfig, bases: dict | None = None) -> dict:
    """One spec string -> {hook_name: fn}; ConfigError (one line) for a spec that names no hook point."""
    bases = bases or {}
    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    if kind == "ablate_head" and len(args) in (1, 2) and args[0].count(".") == 1:
        layer, head = (_int(x, spec) for x in args[0].split("."))
        check_layer_head(cfg, layer, head)
        mode = args[1] if len(args) == 2 else "zero"
        check(mode in ("zero", "mean"), f"training intervention {spec!r}: mode must be zero or mean, got {mode!r}")
        return abl.ablate_head(layer, head, mode)
    if kind == "ablate_neurons" and len(args) == 2:
        layer = _int(args[0], spec)
        check_layer_head(cfg, layer)
        check(cfg.d_mlp is not None, f"training intervention {spec!r}: the model has no MLP")
        neurons = [_int(x, spec) for x in args[1].split(",")]
        check(all(0 <= n < cfg.d_mlp for n in neurons), f"training intervention {spec!r}: neurons must be in 0..{cfg.d_mlp - 1}")
        return abl.ablate_neurons(layer, neurons)
    if kind in ("zero", "mean") and len(args) == 1 and args[0]:
        return abl.ablate(check_hook_name(cfg, args[0]), kind)
    if kind in ("project_off", "project_onto") and len(args) == 2 and args[0]:
        name = check_hook_name(cfg, args[0])
        basis = _basis(args[1], bases, spec)
        make = abl.project_off if kind == "project_off" else abl.project_onto
        return make(name, basis)
    check(False, f"training intervention {spec!r} names no hook point (forms: {FORMS})")
    return {}


def parse_interventions(specs, cfg: tfm.TransformerConfig, bases: dict | None = None) -> dict:
    """Spec strings -> one hooks dict for `apply(..., hooks=...)` (interventions on one point composed in order)."""
    if isinstance(specs, str):
        specs = (specs,)
    return abl.compose(*(parse_intervention(s, cfg, bases) for s in specs))
