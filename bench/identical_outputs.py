"""Byte-identical outputs across a refactor: segment, qc, anomaly fit/score/evaluate on fixed inputs.

Builds a fixed input set in WORK/in (the example images and DICOM, a handful of data-pack cases of
every source, the hostile corpus of ``tests/hostile.py``), runs the real command line on it from
WORK, and hashes every output file (the path of WORK reads ``$WORK``, so two folders compare).
``--record`` writes the hashes (and the versions of the numerical libraries); ``--compare`` reruns and
prints every file whose bytes changed, and the library versions that changed since the recording (a fresh
install that resolves newer numpy/scipy/MONAI moves the last digits of landmarks: 2026-12-02, same code).

The anomaly detector is fitted seeded and tiny (2 epochs at 32 px, 1 critic epoch, one thread),
so its weights are reproducible bit for bit. Files are hashed byte for byte, except fields that
must differ between two runs of the same code: a DICOM-SEG is hashed without its creation/content
times, contributing-equipment timestamps and the random Dimension Organization UID highdicom
draws; a detector or checkpoint (.pt, .ckpt) is hashed from its loaded contents without
``fit_seconds`` (the training time it records).

Usage::

    .venv/bin/python bench/identical_outputs.py --record bench/results/identical_outputs.json
    .venv/bin/python bench/identical_outputs.py --compare bench/results/identical_outputs.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from hostile import hostile_corpus

DATA = ROOT.parent / "shared" / "data"
PACK = {  # (manifest, image folder, ids): a few cases of every source, fixed by id
    "jsrt": ("cxr-seg", "jsrt", ["JPCLN001", "JPCLN003", "JPCNN010"]),
    "montgomery": ("cxr-lungs", "montgomery", ["MCUCXR_0002_0", "MCUCXR_0113_1"]),
    "shenzhen": ("cxr-lungs", "shenzhen", ["CHNCXR_0013_0", "CHNCXR_0327_1"]),
}
NORMALS = 12  # pediatric normals the tiny detector is fitted on (the first by id)
PNEUMONIA = 3  # pediatric pneumonia films scored and evaluated beside the normals


def _pack_image(folder: Path, case_id: str) -> Path:
    hits = sorted(folder.glob(f"{case_id}.*")) + sorted(folder.glob(f"**/{case_id}.*"))
    if not hits:
        raise SystemExit(f"{case_id} not found under {folder}")
    return hits[0]


def _anomaly_cases() -> tuple[list[Path], list[Path]]:
    from anatomix.data.anomaly_pack import anomaly_cases

    cases = sorted(anomaly_cases(DATA, source="zhanglab"), key=lambda c: c.id)
    normal = [c.path for c in cases if c.label == "normal"][:NORMALS]
    sick = [c.path for c in cases if c.label != "normal"][:PNEUMONIA]
    return normal, sick


def build_inputs(work: Path) -> None:
    """WORK/in: examples/, pack/<source>/, normals/, sick/, hostile/ (and labels.csv)."""
    if not DATA.is_dir():
        raise SystemExit(f"needs the data pack at {DATA}")
    inp = work / "in"
    shutil.copytree(ROOT / "examples" / "images", inp / "examples", ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(ROOT / "examples" / "dicom" / "nih_00000001_000.dcm", inp / "examples")
    for source, (pack, folder, ids) in PACK.items():
        (inp / "pack" / source).mkdir(parents=True)
        for case_id in ids:
            src = _pack_image(DATA / pack / folder, case_id)
            shutil.copy(src, inp / "pack" / source / src.name)
    normal, sick = _anomaly_cases()
    for name, paths in (("normals", normal), ("sick", sick)):
        (inp / name).mkdir()
        for p in paths:
            shutil.copy(p, inp / name / p.name)
    with open(inp / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "label"])
        w.writerows([[p.stem, 0] for p in normal] + [[p.stem, 1] for p in sick])
    hostile_corpus(inp / "hostile")


COMMANDS = [
    ["segment", "in/examples", "in/pack", "in/normals", "in/sick", "in/hostile", "-o", "out/segment", "--format", "png", "--format",
     "nifti", "--format", "dicom-seg", "--overlays", "--batch-size", "4", "--threads", "1", "--no-progress"],
    ["qc", "out/segment/segmentations.csv", "--images", "in/examples", "-o", "out/qc", "--report-max", "8"],
    ["qc", "out/segment/dicom-seg", "--images", "in/examples", "-o", "out/qc-seg", "--no-report"],
    ["anomaly", "fit", "in/normals", "-o", "out/anomaly/detector.pt", "--epochs", "2", "--image-size", "32",
     "--critic-epochs", "1", "--batch-size", "4", "--threads", "1", "--seed", "0", "--masks", "out/segment/masks"],
    ["anomaly", "score", "in/normals", "in/sick", "in/examples", "in/hostile", "--detector",
     "out/anomaly/detector.pt", "-o", "out/anomaly/scores.csv", "--masks", "out/segment/masks", "--maps",
     "out/anomaly/maps", "--threads", "1"],
    ["anomaly", "score", "in/examples", "-o", "out/anomaly/bundled.csv", "--threads", "1"],
    ["anomaly", "evaluate", "out/anomaly/scores.csv", "--labels", "in/labels.csv", "-o", "out/anomaly/evaluation"],
]


VOLATILE_DICOM = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                  "ContributingEquipmentSequence", "DimensionOrganizationSequence", "DimensionIndexSequence")


def _canonical(value) -> bytes:
    """Bytes of a loaded checkpoint's contents (tensors by value), ``fit_seconds`` left out."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _canonical(v) for k, v in sorted(value.items(), key=str)
                                if k != "fit_seconds") + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(_canonical(v) for v in value) + b"]"
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return str(value.dtype).encode() + str(value.shape).encode() + value.tobytes()
    return repr(value).encode()


TEXT_SUFFIXES = (".csv", ".json", ".html", ".txt", ".md")


def digest(path: Path, work: Path) -> str:
    """sha256 of the file's bytes, or of its contents without volatile fields (see the docstring).

    In text files the WORK folder's absolute path (inputs are written resolved) reads ``$WORK``,
    so that runs in different folders compare.
    """
    if path.suffix in TEXT_SUFFIXES:
        return hashlib.sha256(path.read_bytes().replace(str(work.resolve()).encode(), b"$WORK")).hexdigest()
    if path.suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        for keyword in VOLATILE_DICOM:
            if keyword in ds:
                delattr(ds, keyword)
        from io import BytesIO

        buf = BytesIO()
        ds.save_as(buf)
        return hashlib.sha256(buf.getvalue()).hexdigest()
    if path.suffix in (".pt", ".ckpt"):
        import torch

        return hashlib.sha256(_canonical(torch.load(path, map_location="cpu", weights_only=False))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_all(work: Path) -> dict:
    """Fresh WORK, every command from WORK; returns {"exit": [...], "files": {relpath: sha256}}."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    build_inputs(work)
    exe = str(Path(sys.executable).with_name("anatomix"))
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    codes = []
    for cmd in COMMANDS:
        run = subprocess.run([exe, *cmd], cwd=work, env=env, capture_output=True, text=True, check=False)
        codes.append(run.returncode)
        print(f"exit {run.returncode}: anatomix {' '.join(cmd)}", flush=True)
        if run.returncode not in (0, 1):
            print(run.stderr[-3000:])
    files = {str(p.relative_to(work)): digest(p, work)
             for p in sorted((work / "out").rglob("*")) if p.is_file() and not p.name.startswith(".")}
    return {"exit": codes, "files": files, "versions": library_versions()}


#: the libraries whose floating-point results reach the outputs (a fresh install may resolve others)
LIBRARIES = ("numpy", "scipy", "torch", "torch-geometric", "monai", "segmentation-models-pytorch",
             "scikit-image", "pillow", "pydicom", "highdicom", "nibabel")


def library_versions() -> dict:
    """Installed version of each of :data:`LIBRARIES` (``-`` when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def compare(before: dict, after: dict) -> int:
    """Print a table of every difference; return the number of differences."""
    rows = []
    changed = {k: (v, after["versions"].get(k)) for k, v in before.get("versions", {}).items()
               if v != after["versions"].get(k)}
    if changed or "versions" not in before:
        print("library versions differ from the recording (outputs may differ for that reason alone): "
              + (", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) or "none recorded then"))
    if before["exit"] != after["exit"]:
        rows.append(("exit statuses", str(before["exit"]), str(after["exit"])))
    for name in sorted(set(before["files"]) | set(after["files"])):
        a, b = before["files"].get(name, "-"), after["files"].get(name, "-")
        if a != b:
            rows.append((name, a[:12], b[:12]))
    print(f"\n{len(after['files'])} output files; {len(rows)} differ\n")
    if rows:
        print("| output | before | after |\n|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, help="write the hashes here")
    mode.add_argument("--compare", type=Path, help="compare with hashes recorded earlier")
    ap.add_argument("--work", type=Path, default=Path("/tmp/anatomix-identical"))
    args = ap.parse_args()
    result = run_all(args.work)
    if args.record:
        args.record.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"{len(result['files'])} output files hashed into {args.record}")
        return 0
    return 1 if compare(json.loads(args.compare.read_text()), result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
