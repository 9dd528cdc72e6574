"""What the commands write besides their table: a result as JSON, with a line saying where."""

from __future__ import annotations

import json
from typing import Any


def write_json_result(path: str, result: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")
