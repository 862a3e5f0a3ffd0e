"""Cost of the input checks per series (``tsmojo.frames.validate_long_frame``), by frequency.

Every batch job validates its input before forecasting, so this cost adds to the model's. Fixed
steps (hours, days) are checked by one constant-step test; calendar frequencies (months,
quarters, weeks, business days) by one vectorised shift of the timestamp column.

    python benchmarks/validation_speed.py                  # 2,000 series x 120 points per frequency
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from tsmojo.frames import validate_long_frame

FREQUENCIES = ("h", "D", "B", "W-SUN", "MS", "ME", "QS-DEC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--length", type=int, default=120)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    ids = np.repeat([f"s{i:06d}" for i in range(args.series)], args.length)
    print(f"{args.series:,} series x {args.length} points; ms per series (best of 3)")
    print("| frequency | freq inferred | freq given |")
    print("|---|---|---|")
    for freq in FREQUENCIES:
        stamps = np.tile(pd.date_range("2010-01-01", periods=args.length, freq=freq), args.series)
        frame = pd.DataFrame({"unique_id": ids, "ds": stamps, "y": rng.normal(size=len(ids))})
        cells = []
        for given in (None, freq):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                _, errors = validate_long_frame(frame, "unique_id", "ds", ["y"], freq=given)
                best = min(best, time.perf_counter() - start)
            assert not errors, errors[:3]
            cells.append(f"{best / args.series * 1e3:.3f}")
        print(f"| {freq} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
