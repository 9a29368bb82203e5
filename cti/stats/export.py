"""CSV export of report rows (nested values flattened to dotted columns)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, (list, tuple)):
            if all(not isinstance(x, (Mapping, list, tuple)) for x in v):
                out[name] = ";".join("" if x is None else str(x) for x in v)
            else:
                out[name] = json.dumps(v, default=str, separators=(",", ":"))
        else:
            out[name] = v
    return out


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows to CSV text; columns in first-seen order across all rows."""
    flat = [flatten(r) for r in rows]
    cols: dict[str, None] = {}
    for r in flat:
        cols.update(dict.fromkeys(r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in flat:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()
