"""Build the bundled QC files: anatomix/weights/qc_atlases.npz and anatomix/weights/shape_model.npz.

Derived RCA atlases (:func:`anatomix.qc.atlases.build_atlases`) with the training-range statistics
the verdict uses (:func:`anatomix.qc.atlases.training_statistics`), and the PCA shape model
(:class:`anatomix.qc.shape_model.ShapeModel`), all from the training part of
``split_cases(pack_cases(data), 0.2, 0)`` only (the validation cases stay unseen). Deterministic
(seed 0). Run from the repository root; the files and their card (qc_atlases.md) are committed:

    .venv/bin/python tools/build_qc_atlases.py --data ../shared/data --out anatomix/weights
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

import numpy as np

from anatomix.anatomy import LUNGS_HEART
from anatomix.data.cases import pack_cases, split_cases
from anatomix.qc.atlases import build_atlases, training_statistics
from anatomix.qc.shape_model import ShapeModel

ROOT = Path(__file__).resolve().parents[1]


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=str(ROOT / "anatomix" / "weights"))
    ap.add_argument("--clusters", type=int, default=12)
    args = ap.parse_args(argv)
    train, val = split_cases(pack_cases(args.data), 0.2, 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = build_atlases(train, args.clusters)
    refs.meta["training_statistics"] = training_statistics(train)
    refs.save(out / "qc_atlases.npz")
    lms = np.stack([np.load(c.landmarks)[: LUNGS_HEART.n_nodes] for c in train if c.landmarks is not None])
    sm = ShapeModel.fit(lms)
    sm.save(out / "shape_model.npz")
    print(json.dumps({"train": len(train), "val": len(val), "atlases": refs.ids, "members": refs.meta["members"],
                      "shape_modes": len(sm.variances), "shape_threshold": sm.threshold,
                      "stats": refs.meta["training_statistics"]}, indent=1))


if __name__ == "__main__":
    main()
