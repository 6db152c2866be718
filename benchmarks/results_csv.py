"""The one way benchmarks write their rows: a CSV under benchmarks/results/ (folders made as needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_rows(rows: list[dict], out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {out}")
    return out
