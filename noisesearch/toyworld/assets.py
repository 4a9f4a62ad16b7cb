"""Where the embedded world's shipped weights live (inside the installed package)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
#: the diffusers pipeline folder of the embedded model (``--model toyworld``)
PIPELINE_DIR: Path = WEIGHTS_DIR / "pipeline"
#: ``{toyclip,toyrelation,toydetect}.safetensors`` and their ``metrics.json``
VERIFIER_WEIGHTS_DIR: Path = WEIGHTS_DIR / "verifiers"
#: the NPNet trained for the embedded model (``--prior npnet``)
NPNET_FILE: Path = WEIGHTS_DIR / "npnet.safetensors"
