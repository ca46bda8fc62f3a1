"""Print what the offline demo produced: a few poses and the error against ground truth.

    python configs/demo/show.py DEMO_OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main(out_dir: str) -> int:
    files = sorted(Path(out_dir).glob("clip*.h5"))
    if not files:
        print(f"error: {out_dir}: no clip*.h5 (did `posed analyze` run?)", file=sys.stderr)
        return 1
    df = pd.read_hdf(files[0], "df_with_missing")
    scorer = df.columns.get_level_values("scorer")[0]
    print(f"{files[0]}: {len(df)} frames × {df.shape[1] // 3} body parts (scorer {scorer})")
    with pd.option_context("display.width", 140, "display.precision", 1):
        print(df[scorer].head(5))
    truth = pd.read_csv(HERE / "clip_truth.csv", index_col="frame")
    parts = list(df.columns.get_level_values("bodyparts").unique())
    err = np.stack([np.hypot(df[(scorer, bp, "x")].to_numpy() - truth[f"{bp}_x"].to_numpy(),
                             df[(scorer, bp, "y")].to_numpy() - truth[f"{bp}_y"].to_numpy())
                    for bp in parts], axis=1)
    print("error against ground truth (px): "
          + ", ".join(f"{bp} {np.nanmedian(err[:, i]):.2f}" for i, bp in enumerate(parts))
          + f"; all: median {np.nanmedian(err):.2f}, mean {np.nanmean(err):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "demo-out"))
