"""SAEs in SAELens's on-disk format: a folder with cfg.json and sae_weights.safetensors, which
`sae_lens.SAE.load_from_disk(folder)` (SAELens 6) loads, and the tools built on SAELens with it.

mi_jax's architectures map onto SAELens's one for one at inference:
    relu       -> "standard"   f = ReLU((x - b_dec) W_enc + b_enc)
    topk       -> "topk"       the k largest, ReLU'd (decoder rows already of unit norm)
    batchtopk  -> "jumprelu"   f = pre * (pre > theta), the BatchTopK inference threshold for every latent
Weights keep SAELens's names and shapes: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
(and threshold [d_sae] for jumprelu). Where the SAE was trained is kept in the config's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mi_jax.config import check

ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu"}
CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # the SAELens config format written here (loaders read 6.x configs as they are)


def save_saelens(folder, sae: dict, architecture: str, *, hook_name: str, model_name: str, k: int | None = None,
                 metadata: dict | None = None) -> Path:
    """Write one SAE (leaves W_enc, b_enc, W_dec, b_dec, threshold, no leading axes) to `folder` -> folder."""
    from safetensors.numpy import save_file

    check(architecture in ARCHITECTURES,
          f"no SAELens architecture for {architecture!r}; one of {', '.join(ARCHITECTURES)}")
    check(architecture != "topk" or k is not None, "a topk SAE's export needs its k")
    W_enc = np.asarray(sae["W_enc"], np.float32)
    check(W_enc.ndim == 2, f"export one SAE at a time: W_enc has shape {W_enc.shape}, not [d_in, d_sae]")
    d_in, d_sae = W_enc.shape
    weights = {"W_enc": W_enc, "b_enc": np.asarray(sae["b_enc"], np.float32),
               "W_dec": np.asarray(sae["W_dec"], np.float32), "b_dec": np.asarray(sae["b_dec"], np.float32)}
    if architecture == "batchtopk":
        weights["threshold"] = np.full(d_sae, float(sae["threshold"]), np.float32)
    config = {"architecture": ARCHITECTURES[architecture], "d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32",
              "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
              "reshape_activations": "none",
              "metadata": {"sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": None,
                           "hook_name": hook_name, "model_name": model_name,
                           "trained_with": "mi_jax", "mi_jax_architecture": architecture, **(metadata or {})}}
    if architecture == "topk":
        config.update(k=int(k), rescale_acts_by_decoder_norm=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return folder
