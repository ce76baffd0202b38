"""What breadth buys RCA: reference atlases from every labelled collection, measured without leaking.

Issue 16, item 1. Pools of derived cluster-mean atlases (no individual film), all from the
TRAINING split (``split_cases(labelled_cases(data), 0.2, 0)[0]``):

- ``J``: the bundled JSRT atlases (``anatomix/weights/qc_atlases.npz``: lungs + heart);
- ``M``, ``S``: Montgomery and Shenzhen atlases, lungs only (their landmarks traced from the lung
  masks, clustered, members warped onto the cluster's mean landmarks and averaged, as
  :func:`anatomix.qc.atlases.build_atlases` does for JSRT); their heart channel is unlabelled,
  so they score the lungs alone; the heart's RCA comes only from references with a heart (at
  least ``--min-heart`` of the k chosen references are JSRT atlases: the nearest ones are swapped in).

References are chosen by similarity to the query (global NCC, as in :func:`anatomix.qc.rca.select_references`).

The validation mask sets of the committed calibration table (``bench/results/qc_calibration.csv.gz``)
are re-made exactly as :func:`anatomix.qc.calibration.known_quality_rows` makes them (same makers,
films and seeds: checked against the table's ``dice`` and, for pool ``J``, ``rca`` columns) and
their per-structure RCA is computed with each pool. Then:

1. Pearson r of the RCA signal with the structure's true Dice, per collection and pool;
2. leave one collection out (the bundled recipe, :func:`anatomix.qc.quality.loco_evaluate`) with
   the table's ``rca`` column replaced, for fold X, by the RCA of pool ``all minus X`` in every
   row (the pool that would be bundled had X not existed: in-domain for the training rows,
   off-domain for the held-out rows). JSRT cannot be held out of the pool (it holds the only
   hearts), so the JSRT fold uses J+M+S and is in-domain, as it already is with J.

Usage (about 10 min on one shared CPU thread)::

    git show 944e05d:anatomix/weights/hybridgnet_lungs_heart.pt > /tmp/qc16/graph_jsrt.pt
    git show 9bf9e7c:anatomix/weights/pixel_unet_lungs_heart.pt > /tmp/qc16/pixel_jsrt.pt
    OMP_NUM_THREADS=1 python bench/qc_rca_breadth.py --data ../shared/data \\
        --graph-jsrt /tmp/qc16/graph_jsrt.pt --pixel-jsrt /tmp/qc16/pixel_jsrt.pt \\
        --rca-out /tmp/qc16/rca_pools.csv.gz --out bench/results/qc_rca_breadth.md
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOLS = {"J": ("J",), "J+M+S": ("J", "M", "S"), "J+S": ("J", "S"), "J+M": ("J", "M")}
FOLD_POOL = {"jsrt": "J+M+S", "montgomery": "J+S", "shenzhen": "J+M"}


def lung_atlases(cases, n_clusters: int, size: int = 128, min_members: int = 5, seed: int = 0):
    """(images (K, S, S), masks (K, 3, S, S) with the heart channel zero, members) of lungs-only
    cluster-mean atlases (landmarks traced from the lung masks)."""
    from anatomix.anatomy import (
        STRUCTURES,
        Template,
        landmarks_to_masks,
        masks_to_landmarks,
    )
    from anatomix.data.preprocess import to_model_frame
    from anatomix.io.read import read_mask, read_radiograph
    from anatomix.qc.atlases import cluster_means

    lungs = Template(STRUCTURES[:2])
    imgs, lms = [], []
    for c in cases:
        if not all(k in c.masks for k in lungs.keys):
            continue
        try:
            lm = masks_to_landmarks({k: read_mask(c.masks[k]) for k in lungs.keys}, lungs)
        except ValueError:
            continue
        img, frame = to_model_frame(read_radiograph(c.image).pixels, size)
        imgs.append(img)
        lms.append(frame.points_to_model(lm))
    images, shapes, members = cluster_means(np.stack(imgs), np.stack(lms), n_clusters, min_members, seed)
    masks = []
    for mean_lm in shapes:
        m = landmarks_to_masks(mean_lm, (size, size), lungs)
        masks.append(np.stack([m["lungR"], m["lungL"], np.zeros((size, size), bool)]).astype(np.float32))
    return np.stack(images).astype(np.float32), np.stack(masks), members


def build_pools(data, m_clusters: int, s_clusters: int):
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.qc.rca import load_references

    train = split_cases(labelled_cases(data), 0.2, 0)[0]
    j = load_references(None)
    parts = {"J": (j.images, j.masks, np.ones((len(j), 3), bool), list(j.ids))}
    info = {"J": list(j.meta["members"])}
    for name, src, n in (("M", "montgomery", m_clusters), ("S", "shenzhen", s_clusters)):
        cs = [c for c in train if c.source == src]
        im, ma, mem = lung_atlases(cs, n)
        lab = np.ones((len(im), 3), bool)
        lab[:, 2] = False
        parts[name] = (im, ma, lab, [f"{src}{i:02d}" for i in range(len(im))])
        info[name] = mem
        print(f"  {name}: {len(cs)} training cases -> {len(im)} atlases, members {mem}", file=sys.stderr, flush=True)
    pools = {}
    for pname, members in POOLS.items():
        pools[pname] = tuple(np.concatenate([parts[m][i] for m in members]) for i in range(3)) + (
            sum((parts[m][3] for m in members), []),)
    return pools, info


def select(img, images, labelled, k: int, min_heart: int):
    """k nearest by global NCC; at least ``min_heart`` of them with a heart (nearest swapped in)."""
    q = img.ravel() - img.mean()
    r = images.reshape(len(images), -1)
    r = r - r.mean(axis=1, keepdims=True)
    ncc = (r @ q) / (np.linalg.norm(r, axis=1) * np.linalg.norm(q) + 1e-6)
    order = np.argsort(-ncc)
    idx = list(order[:k])
    heart = [i for i in order if labelled[i, 2]]
    need = min_heart - sum(labelled[i, 2] for i in idx)
    if need > 0:
        extra = [i for i in heart if i not in idx][:need]
        drop = [i for i in reversed(idx) if not labelled[i, 2]][:len(extra)]
        idx = [i for i in idx if i not in drop] + extra
    return np.array(idx)


def pool_dice(pixels, mask_sets, pool, k: int, min_heart: int):
    """(n_sets, k, 3) per-structure Dice with each chosen reference; NaN where it has no label."""
    import torch

    from anatomix.anatomy import STRUCTURE_KEYS
    from anatomix.qc.rca import (
        DEFAULT_REGISTRATION,
        prepare_image,
        prepare_masks,
        register_batch,
    )

    images, masks, labelled, _ = pool
    torch.manual_seed(0)
    img, frame = prepare_image(pixels, images.shape[-1])
    qm = np.concatenate([prepare_masks(m, frame, STRUCTURE_KEYS) for m in mask_sets])
    idx = select(img, images, labelled, k, min_heart)
    res = register_batch(img, qm, images[idx], DEFAULT_REGISTRATION)
    s = images.shape[-1]
    a = res.warped_masks.reshape(len(idx), len(mask_sets), 3, s, s) >= 0.5
    b = masks[idx][:, None] >= 0.5
    inter = (a & b).sum(axis=(-1, -2))
    den = a.sum(axis=(-1, -2)) + b.sum(axis=(-1, -2))
    d = np.where(den == 0, 1.0, 2.0 * inter / np.maximum(den, 1))
    d = np.where(labelled[idx][:, None, :], d, np.nan)
    missing = np.isnan(qm).all(axis=(1, 2)).reshape(len(mask_sets), 3)
    return np.where(missing[None], np.nan, d).transpose(1, 0, 2)


def pool_rows(data, graph_jsrt, pixel_jsrt, pools, k, min_heart, limit=0):
    """Per (case, film, kind, structure): true Dice and the RCA of every pool (the table's mask sets)."""
    import warnings

    from anatomix.anatomy import STRUCTURE_KEYS, dice
    from anatomix.data.cases import labelled_cases, split_cases
    from anatomix.qc.calibration import mask_sets, table_makers

    cases = split_cases(labelled_cases(data))[1]
    if limit:
        cases = cases[:limit]
    makers, degraded, _ = table_makers(graph_jsrt, pixel_jsrt)
    out, t0, current = [], time.perf_counter(), 0
    for i, case, film, rad, truth, sets in mask_sets(cases, makers, 2, degraded):
        if i != current and i % 10 == 0:
            print(f"  {i}/{len(cases)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        current = i
        keys = list(truth)
        rca = {}
        for pname, pool in pools.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                d = pool_dice(rad.pixels, list(sets.values()), pool, k, min_heart)
                rca[pname] = np.nanmean(d, axis=1)  # (n_sets, 3)
        if min_heart == 0:  # per structure: the heart from the k nearest heart atlases (pool J's)
            for pname in pools:
                rca[pname][:, 2] = rca["J"][:, 2]
        for j, (kind, masks) in enumerate(sets.items()):
            for c, key in enumerate(STRUCTURE_KEYS):
                if key in keys:
                    out.append({"case": case.case_id, "collection": case.source, "film": film, "kind": kind,
                                "structure": key, "dice": dice(masks[key], truth[key]),
                                **{f"rca_{p}": float(rca[p][j, c]) for p in pools}})
    return out


def write_csv(rows, path):
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    Path(path).write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))


def read_csv(path):
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(Path(path).read_bytes()).decode())))
    for r in rows:
        for k in list(r):
            if k == "dice" or k.startswith("rca_"):
                r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
    return rows


def analyse(table_rows, pool_rows_, pools) -> str:
    from anatomix.qc.calibration import table_arrays
    from anatomix.qc.quality import (
        FAILED_BELOW,
        GOOD_FROM,
        loco_evaluate,
        mask_means,
        pass_rates,
        pearson,
    )
    from anatomix.qc.signals import FEATURES

    by = {(r["case"], r["film"], r["kind"], r["structure"]): r for r in pool_rows_}
    table_rows = [t for t in table_rows if (t["case"], t["film"], t["kind"], t["structure"]) in by]
    match = [by[(t["case"], t["film"], t["kind"], t["structure"])] for t in table_rows]
    dd = np.array([abs(t["dice"] - m["dice"]) for t, m in zip(table_rows, match)])
    dr = np.array([abs(t["rca"] - m["rca_J"]) for t, m in zip(table_rows, match)])
    lines = [f"Reproduction check ({len(table_rows)} table rows): max |dice - table| {np.nanmax(dd):.2g}, "
             f"max |rca(J) - table rca| {np.nanmax(dr):.2g} (median {np.nanmedian(dr):.2g}).", ""]
    colls = sorted(set(t["collection"] for t in table_rows))
    # 1. RCA alone vs true Dice
    lines += ["### RCA alone: Pearson r with the structure's true Dice (mean abs error)", "",
              "| pool | structure | " + " | ".join(colls) + " |", "|---|---|" + "---|" * len(colls)]
    one = [i for i, t in enumerate(table_rows) if t["opinion"] == table_rows[0]["opinion"]]
    for p in pools:
        for sname, skeys in (("lungs", ("lungR", "lungL")), ("heart", ("heart",))):
            cells = []
            for c in colls:
                s = [i for i in one if table_rows[i]["collection"] == c and table_rows[i]["structure"] in skeys]
                x = np.array([match[i][f"rca_{p}"] for i in s])
                y = np.array([table_rows[i]["dice"] for i in s])
                ok = np.isfinite(x)
                cells.append("-" if ok.sum() < 3 else f"{pearson(x[ok], y[ok]):.3f} ({np.abs(x[ok] - y[ok]).mean():.3f})")
            lines.append(f"| {p} | {sname} | " + " | ".join(cells) + " |")
    if len(colls) < 2:  # --limit: too few cases for leave one collection out
        return "\n".join(lines)
    # 2. LOCO
    lines += ["", "### Leave one collection out, bundled recipe, RCA of each pool in every row", "",
              f"Failed: true Dice < {FAILED_BELOW}; good: >= {GOOD_FROM}. Pool per fold: the `per-fold` rows use "
              + ", ".join(f"{c}: {p}" for c, p in FOLD_POOL.items()) + " (the JSRT fold is in-domain).", "",
              "| pool | held out | mask sets | Pearson r | r, true Dice >= 0.5 | failed flagged | good passed | threshold |",
              "|---|---|---|---|---|---|---|---|"]

    def loco(p):
        rows = [dict(t, rca=m[f"rca_{p}"]) for t, m in zip(table_rows, match)]
        x, y, g, h, ids = table_arrays(rows, FEATURES)
        return {res.held_out: (res, y, g, ids, h) for res in loco_evaluate(x, y, g, list(FEATURES), h, mask_ids=ids)}

    results = {p: loco(p) for p in pools}
    for label in list(pools) + ["per-fold"]:
        for c in colls:
            p = FOLD_POOL.get(c, "J") if label == "per-fold" else label
            res, y, g, ids, h = results[p][c]
            te = g == c
            _, d = mask_means(y[te], ids[te])
            _, hf = mask_means(h[te].astype(float), ids[te])
            s = d >= 0.5
            flag, keep = pass_rates(res.pred, d, res.threshold, hf > 0)
            lines.append(f"| {label if label != 'per-fold' else 'per-fold (' + p + ')'} | {c} | {len(d)} | {res.pearson_r:.3f} | "
                         f"{pearson(res.pred[s], d[s]):.3f} | {100 * flag:.1f} % | {100 * keep:.1f} % | {res.threshold:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from anatomix.qc.calibration import read_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--graph-jsrt", required=True)
    ap.add_argument("--pixel-jsrt", required=True)
    ap.add_argument("--table", type=Path, default=ROOT / "bench" / "results" / "qc_calibration.csv.gz")
    ap.add_argument("--rca-out", type=Path, required=True, help="per-pool RCA rows (.csv.gz); read if present")
    ap.add_argument("--m-clusters", type=int, default=4)
    ap.add_argument("--s-clusters", type=int, default=6)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--min-heart", type=int, default=2,
                    help="0: per-structure selection (lungs: k nearest of the pool; heart: k nearest heart atlases)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    pools, info = build_pools(args.data, args.m_clusters, args.s_clusters)
    if args.rca_out.is_file():
        prow = read_csv(args.rca_out)
    else:
        prow = pool_rows(args.data, args.graph_jsrt, args.pixel_jsrt, pools, args.k, args.min_heart, args.limit)
        write_csv(prow, args.rca_out)
    text = "\n".join([
        f"`{' '.join(['python', 'bench/qc_rca_breadth.py'] + (argv if argv is not None else sys.argv[1:]))}` "
        f"({time.perf_counter() - t:.0f} s)", "",
        "Atlases (cluster members): " + "; ".join(f"{p} {len(m)} ({', '.join(map(str, m))})" for p, m in info.items())
        + f"; k = {args.k}, at least {args.min_heart} with a heart.", "",
        analyse(read_rows(args.table), prow, pools), ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
