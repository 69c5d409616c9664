#!/usr/bin/env bash
# Build the TransformerLens and SAELens peer venvs once; a venv whose import check passes is left untouched.
#   /tmp/peer-tl  : torch 2.13.0 + transformer-lens 2.18.0, numpy < 2
#   /tmp/peer-sae : torch 2.13.0 + sae-lens 6.54.12 (with the transformer-lens 3 it asks for), numpy < 2
# It runs tl_grok_step.py, tl_grok_analysis.py, tl_induction_analysis.py, tl_induction_step.py,
# tl_patching.py and torch_tms.py. devinterp has a venv of its own (/tmp/peer-di), which
# `python benchmarks/peer_runs.py` builds together with this one.
# Usage, from the repository root:
#     bash benchmarks/peers/setup-peer-venvs.sh      (PY=/path/to/python3.11 chooses the interpreter)
# The benchmarks run it themselves the first time they need the venv.
set -euo pipefail
PY=${PY:-python3}
TL=/tmp/peer-tl
SAE=/tmp/peer-sae

TL_CHECK='import importlib.metadata as m, torch, transformer_lens
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert m.version("transformer-lens") == "2.18.0"'

works() { [ -x "$1/bin/python" ] && "$1/bin/python" -c "$2" >/dev/null 2>&1; }

# pip -q install, minus the harmless "Location ... is ignored" notice some pip.conf files cause
pipi() { "$1/bin/pip" install -q "${@:2}" 2>&1 | { grep -v 'is ignored: it is neither' || true; }; }
fresh_venv() { rm -rf "$1"; "$PY" -m venv "$1"; pipi "$1" --upgrade pip; }

if works "$TL" "$TL_CHECK"; then echo "[setup] $TL already works, skipping"
else
  echo "[setup] building $TL"
  fresh_venv "$TL"
  # torch alone and pinned first: a bare, unpinned torch would pull a multi-GB CUDA build
  pipi "$TL" torch==2.13.0
  # TransformerLens 2.18 on Python 3.11 needs numpy < 2, pandas < 2.1 and huggingface-hub < 1 (so
  # transformers < 5); pyarrow < 20 goes with numpy < 2. The pins also spare pip's backtracking.
  pipi "$TL" torch==2.13.0 transformer-lens==2.18.0 \
    'numpy<2' 'pyarrow<20' 'pandas<2.1' 'transformers<5'
  works "$TL" "$TL_CHECK" || { echo "[setup] $TL import check FAILED" >&2; exit 1; }
fi

"$TL/bin/python" -c 'import torch, importlib.metadata as m; print("peer-tl : torch", torch.__version__, "| transformer-lens", m.version("transformer-lens"), "| numpy", m.version("numpy"))'

SAE_CHECK='import importlib.metadata as m, torch, sae_lens
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert m.version("sae-lens") == "6.54.12"'
if works "$SAE" "$SAE_CHECK"; then echo "[setup] $SAE already works, skipping"
else
  echo "[setup] building $SAE"
  fresh_venv "$SAE"
  pipi "$SAE" torch==2.13.0
  pipi "$SAE" torch==2.13.0 sae-lens==6.54.12 'numpy<2' 'pyarrow<20' 'pandas<2.1' 'transformers<5'
  works "$SAE" "$SAE_CHECK" || { echo "[setup] $SAE import check FAILED" >&2; exit 1; }
fi
"$SAE/bin/python" -c 'import torch, importlib.metadata as m; print("peer-sae: torch", torch.__version__, "| sae-lens", m.version("sae-lens"), "| numpy", m.version("numpy"))'
