"""Interventions as hook dicts for `mi_jax.models.transformer.apply(..., hooks=...)`, and causal
measures built from them: ablation, activation / path / attribution patching and linear probes.

Each hook-dict function returns `{hook_name: fn}`; merge several with `compose`. Everything is pure,
so an intervention vmaps over components, checkpoints and seeds like any measure.

    logits, _ = apply(params, tokens, cfg, hooks=ablate_head(layer=1, head=0))
    logits, _ = apply(params, corrupt, cfg, hooks=patch(clean_cache, ["blocks.0.attn.hook_z"]))
    metric = make_metric("logit_diff", answer, wrong)
    head_patching(params, cfg, clean, corrupt, metric)                  # [layer, head]
    analyze_params(series, {"p": head_patching_measure(cfg, clean, corrupt, answer, wrong)})

Files: metrics, patching (activation patching grids), path_patching, attribution, measures
(trajectory factories), probes and probe_measures. The hook dicts themselves are edits of the model,
below the tasks that train with them, and live beside it (re-exported here): `mi_jax.models.ablation`
(zero / mean / resample, heads, neurons, subspaces), `mi_jax.models.hook_specs` (training-time
interventions from strings) and `mi_jax.models.names` (hook-name checks).
"""

from mi_jax.models.ablation import (
    ablate,
    ablate_head,
    ablate_neurons,
    compose,
    fourier_directions,
    orthonormal_rows,
    project_off,
    project_onto,
    resample_ablate,
)
from mi_jax.interventions.attribution import agreement, attribution_patching
from mi_jax.interventions.measures import (
    attribution_measure,
    head_ablation_measure,
    head_patching_measure,
    path_patching_measure,
    patching_measure,
)
from mi_jax.interventions.metrics import make_metric, normalise
from mi_jax.models.names import check_hook_name
from mi_jax.interventions.path_patching import path_patching
from mi_jax.interventions.patching import (
    SITES,
    activation_patching,
    head_input_patching,
    head_patching,
    mlp_patching,
    patch,
    resid_patching,
)
from mi_jax.interventions.probe_measures import grokking_probe_measure, induction_probe_measure, linear_probe_measure
from mi_jax.interventions.probes import logistic_accuracy, ridge_r2
from mi_jax.models.hook_specs import parse_interventions

__all__ = [
    "SITES", "ablate", "ablate_head", "ablate_neurons", "activation_patching", "agreement", "attribution_measure",
    "attribution_patching", "check_hook_name", "compose", "fourier_directions", "grokking_probe_measure",
    "head_ablation_measure", "head_input_patching", "head_patching", "head_patching_measure",
    "induction_probe_measure", "linear_probe_measure",
    "logistic_accuracy", "make_metric", "mlp_patching", "normalise", "orthonormal_rows", "parse_interventions", "patch",
    "path_patching", "path_patching_measure", "patching_measure", "project_off", "project_onto", "resample_ablate",
    "resid_patching", "ridge_r2",
]
