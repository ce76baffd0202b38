"""``anatomix segment`` over a corpus of hostile inputs, through the real command line.

The corpus is the one of ``tests/hostile.py`` (built in a temporary folder): zero-byte,
garbage, truncated PNG, 16-bit, RGBA, palette, a 6000x4800 PNG, non-square, DICOM
MONOCHROME1 and DICOM without pixel data, NIfTI, all-black, a unicode file name in a
subfolder, a dangling symlink, a directory named like an image (with an image inside).
Prints the exit status, the summary line, ``errors.csv`` and one line per segmented image, and
checks: no crash, every bad file listed with a reason, every good file segmented, exit status 1.

Usage::

    nice -n 10 .venv/bin/python bench/hostile_batch.py [--model graph] [--no-qc]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from hostile import hostile_corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="graph")
    ap.add_argument("--no-qc", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="anatomix-hostile-"))
    try:
        good, bad = hostile_corpus(tmp / "corpus")
        exe = Path(sys.executable).with_name("anatomix")
        cmd = [str(exe), "segment", str(tmp / "corpus"), "-o", str(tmp / "out"), "--model", args.model,
               "--overlays", "--no-progress"] + (["--no-qc"] if args.no_qc else [])
        print("$ anatomix segment CORPUS -o OUT --model", args.model, "--overlays", "--no-qc" * args.no_qc)
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(f"exit status {run.returncode}\n{run.stdout.strip().replace(str(tmp), '$TMP')}")
        tail = [line for line in run.stderr.splitlines() if "Traceback" in line or "Error" in line]
        with open(tmp / "out" / "errors.csv", newline="", encoding="utf-8") as f:
            errors = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
        with open(tmp / "out" / "segmentations.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        print("\nerrors.csv:\n\n| file | reason |\n|---|---|")
        for name, reason in sorted(errors.items()):
            print(f"| {name} | {reason} |")
        print("\nsegmentations.csv:\n\n| image_id | file | Height x Width | masks | qc_pass |\n|---|---|---|---|---|")
        for r in rows:
            masks = sorted(p.name.split("_")[-1][:-4] for p in (tmp / "out" / "masks").glob(f"{r['image_id']}_*.png"))
            print(f"| {r['image_id']} | {Path(r['path']).name} | {r['Height']} x {r['Width']} | "
                  f"{','.join(masks)} | {r.get('qc_pass', '-')} |")
        checks = {
            "no traceback": not tail,
            "exit status 1": run.returncode == 1,
            "every bad file in errors.csv with a reason": set(errors) == bad and all(errors.values()),
            "every good file segmented": {Path(r["path"]).name for r in rows} == good,
        }
        print()
        for name, ok in checks.items():
            print(f"- {'PASS' if ok else 'FAIL'}: {name}")
        return 0 if all(checks.values()) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
