"""What SimSID-style in-painting buys, ingredient by ingredient: a table from ``bench/anomaly_pediatric.py`` runs.

Each run's JSON (``WORK/TAG.json``, written by ``bench/anomaly_pediatric.py --method simsid ...``) holds
the test-split figures of every residual x aggregation x region of one fitted detector (the field
prior for regions, as in that bench). This prints, per run, the residuals that isolate one ingredient
each, with the whole-image mean aggregation fixed beforehand (no choice made on test films):

- ``auto``: the in-painting model's own map (squared error of the in-painted image);
- ``ssim``: the structural residual of the same reconstruction;
- ``critic``: the realness critic alone;
- ``ssim+critic``: both, as z-scores of held-out normals;

and, where ``--select TAG`` was run, the label-selected setup (chosen on a validation split that
contains train-split pneumonia films: the SQUID/SimSID protocol, marked as such).

Usage::

    python bench/anomaly_simsid.py simsid_c simsid_noshuf_c --work runs/anomaly_ped128 \
        --out bench/results/anomaly_simsid.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESIDUALS = ("auto", "ssim", "critic", "ssim+critic")


def rows(tag: str, r: dict) -> list[str]:
    """Markdown rows of one run: one per residual, then the label-selected setup if any."""
    cfg = r["model_config"]
    what = (f"{tag} (shuffle {cfg.get('shuffle_fraction')}, memory {cfg.get('memory_size')}, {r['epochs']} epochs, "
            f"{r['params'] / 1e6:.2f} M, fit {r['fit_seconds']:.0f} s, {r['score_img_per_s']:.0f} img/s)")
    out = []
    for res in RESIDUALS:
        m = r["variants"].get(f"{res}/mean/image")
        if m:
            out.append(f"| {what} | {res}/mean/image | {m['auroc']:.3f} | {m['ap']:.3f} | {m['tpr@5%fpr']:.3f} |")
    if "selected" in r:
        s = r["selected"]
        out.append(f"| {what} | **label-selected**: {s['setup']} (validation AUROC {s['val_auroc']:.3f}) | "
                   f"{s['test']['auroc']:.3f} | {s['test']['ap']:.3f} | {s['test']['tpr@5%fpr']:.3f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tags", nargs="+")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    lines = ["# SimSID-style in-painting on the pediatric protocol (test split: 187 normal, 301 pneumonia)", "",
             "`python bench/anomaly_simsid.py " + " ".join(a.tags) + f" --work {a.work}`", "",
             "| run | residual / aggregation / region | AUROC | AP | TPR@5%FPR |", "|---|---|---:|---:|---:|"]
    for tag in a.tags:
        lines += rows(tag, json.loads((a.work / f"{tag}.json").read_text()))
    lines += ["", "Fit seconds and images/s are wall-clock figures of runs that shared the two cores with another job "
              "(one thread each); compare speeds in `bench/anomaly_detector_speed.py` tables. For reference, "
              "`squid_c` (SQUID-style FIFO memory queue, 64 px, 20 + critic epochs) in "
              "`bench/results/anomaly_pediatric.md`: ssim+critic/mean/image 0.860, critic/mean 0.827, auto/mean 0.354."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
