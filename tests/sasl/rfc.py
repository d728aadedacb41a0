"""The RFC examples in vectors/rfc_vectors.json (see vectors/NOTICE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_PATH = Path(__file__).parent / "vectors" / "rfc_vectors.json"


def vector(name: str) -> Any:
    return json.loads(_PATH.read_text(encoding="utf-8"))[name]
