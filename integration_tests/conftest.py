"""Integration tests run the embedded models fully offline.

``HF_HUB_OFFLINE`` is set before transformers or sentence-transformers is imported, so any
attempt to reach the hub fails fast instead of hanging. The SmolLM2 safetensors cache goes to
the repository's ignored ``.complm-cache/`` unless ``COMPLM_CACHE_DIR`` is already set, so
only the first run pays for dequantizing the GGUF.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault(
    "COMPLM_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".complm-cache")
)
