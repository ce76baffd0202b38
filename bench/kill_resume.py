"""Kill ``anatomix segment`` at random moments, resume, and compare with an uninterrupted run.

Makes ``--n`` 512 px PNGs from the data pack (plus two broken files, so that ``errors.csv`` is
compared too) in a temporary folder, then:

1. runs the real command line once, uninterrupted, into ``ref/``;
2. starts it on ``out/`` and SIGKILLs it at a random moment, ``--kills`` times (each restart
   resumes what the previous one left), then lets a last run finish;
3. compares ``out/`` with ``ref/``: every mask/overlay file byte for byte (``.nii.gz`` after
   gunzip: gzip stamps its write time), ``segmentations.csv`` row by row after sorting and as
   whole files, ``errors.csv``, one row per image, no temporary files left.

Each kill moment is random (from ``--seed``) while work is left: the restart is killed once its
CSV reaches a row count drawn uniformly over the images still to do, plus a random fraction of
one image's time, so kills land mid-batch, mid-write and between a file and its row. Prints what each kill left behind and the verdict; exit status 0 when identical.

Usage::

    nice -n 10 .venv/bin/python bench/kill_resume.py [--n 200] [--kills 3] [--seed 0] [--model graph]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pack_corpus import make_corpus


def command(env: dict, cwd: Path) -> list[str]:
    """The ``anatomix segment`` command line: the console script once the command is registered."""
    exe = Path(sys.executable).with_name("anatomix")
    if exe.is_file():
        probe = subprocess.run([str(exe), "segment", "--help"], capture_output=True, text=True, check=False, env=env, cwd=cwd)
        if probe.returncode == 0:
            return [str(exe), "segment"]
    return [sys.executable, "-m", "anatomix.cli.segment"]


def inner_seconds(summary: str) -> float:
    """The run time that the command's summary line reports ("... in 1m05s (...") in seconds."""
    m = re.search(r" in (?:(\d+)h)?(?:(\d+)m)?([\d.]+)s \(", summary)
    if not m:
        return 0.0
    h, mi, sec = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec)


def rows_written(out: Path) -> int:
    """Complete rows in ``out/segmentations.csv`` (newlines minus the header's)."""
    try:
        return max(0, (out / "segmentations.csv").read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


def csv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def outputs(folder: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            data = p.read_bytes()
            files[str(p.relative_to(folder))] = gzip.decompress(data) if p.name.endswith(".gz") else data
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="graph", help="bundled name or checkpoint (default: bundled graph, "
                                                       "else an untrained default HybridGNet)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-qc", action="store_true", help="pass --no-qc (QC columns are on by default)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="anatomix-kill-resume-"))
    try:
        # run a frozen copy of the package: the shared checkout may change under a long benchmark
        snapshot = tmp / "src"
        shutil.copytree(REPO / "anatomix", snapshot / "anatomix", ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, str(snapshot))
        env = {**os.environ, "PYTHONPATH": str(snapshot)}
        make_corpus(tmp / "in", args.n)
        (tmp / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ncut short")
        (tmp / "in" / "empty.dcm").write_bytes(b"")
        model = args.model
        if Path(model).is_file():  # a checkpoint that training may replace meanwhile: freeze it too
            model = str(shutil.copy(model, tmp / "model.pt"))
        used = subprocess.run([sys.executable, "-c", "import anatomix; print(anatomix.__file__)"],
                              capture_output=True, text=True, check=False, cwd=tmp, env=env).stdout.strip()
        assert used.startswith(str(snapshot)), f"subprocesses import {used}, not the snapshot"
        cmd = command(env, tmp) + [str(tmp / "in"), "--model", model, "--device", "cpu", "--workers", str(args.workers),
                           "--batch-size", str(args.batch_size), "--overlays", "--format", "png",
                           "--format", "nifti", "--no-progress"] + (["--no-qc"] if args.no_qc else [])
        print("command:", " ".join(cmd[:2] if cmd[0].endswith("anatomix") else cmd[:3]), "INPUT -o OUT",
              " ".join(cmd[cmd.index("--model"):]).replace(str(tmp), "$TMP"))

        t = time.perf_counter()
        ref = subprocess.run(cmd + ["-o", str(tmp / "ref")], capture_output=True, text=True, check=False, cwd=tmp, env=env)
        ref_seconds = time.perf_counter() - t
        print(f"uninterrupted: exit {ref.returncode} in {ref_seconds:.1f}s: {ref.stdout.strip()}")
        if ref.returncode not in (0, 1):
            print(ref.stderr[-3000:])
            return 2

        work = inner_seconds(ref.stdout) or ref_seconds
        startup, per_image = max(0.0, ref_seconds - work), work / args.n
        print(f"start-up {startup:.1f}s, {per_image:.2f}s per image")
        rng = random.Random(args.seed)
        out = tmp / "out"
        print("\n| kill | after s | at row | rows in CSV | partial last line | temp files | exit |")
        print("|---:|---:|---:|---:|---|---:|---:|")
        for k in range(args.kills):
            # a random moment while work is left: once the CSV reaches a row count drawn
            # uniformly over the images still to do, wait a random fraction of one image's time
            before = rows_written(out)
            target = rng.randint(before + 1, max(before + 1, args.n - 1))
            jitter = rng.uniform(0.0, per_image)
            t = time.perf_counter()
            proc = subprocess.Popen(cmd + ["-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    cwd=tmp, env=env)
            while proc.poll() is None and rows_written(out) < target:
                time.sleep(0.05)
            time.sleep(jitter)
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
            delay = time.perf_counter() - t
            data = (out / "segmentations.csv").read_bytes() if (out / "segmentations.csv").is_file() else b""
            temps = [p for p in out.rglob(".*.tmp-*")] if out.is_dir() else []
            partial = "yes" if data and not data.endswith(b"\n") else "no"
            print(f"| {k + 1} | {delay:.1f} | {target} + {jitter:.2f}s | {rows_written(out)} | {partial} | "
                  f"{len(temps)} | {code} |")
        t = time.perf_counter()
        final = subprocess.run(cmd + ["-o", str(out)], capture_output=True, text=True, check=False, cwd=tmp, env=env)
        print(f"\nresumed: exit {final.returncode} in {time.perf_counter() - t:.1f}s: {final.stdout.strip()}")
        if final.returncode not in (0, 1):
            print(final.stderr[-3000:])

        a, b = outputs(tmp / "ref"), outputs(out)
        files = sorted(set(a) | set(b))
        mask_files = [f for f in files if not f.endswith(".csv")]
        same_files = [f for f in mask_files if a.get(f) == b.get(f)]
        ref_rows, out_rows = csv_rows(tmp / "ref" / "segmentations.csv"), csv_rows(out / "segmentations.csv")
        ids = [r[0] for r in out_rows[1:]]
        temps = list(out.rglob(".*.tmp-*"))
        checks = {
            "exit status equal": ref.returncode == final.returncode,
            f"mask/overlay files identical ({len(same_files)}/{len(mask_files)})":
                len(same_files) == len(mask_files) and len(mask_files) > 0,
            "CSV rows equal after sorting": sorted(ref_rows[1:]) == sorted(out_rows[1:]) and ref_rows[0] == out_rows[0],
            "CSV files byte-identical": a.get("segmentations.csv") == b.get("segmentations.csv"),
            f"one row per image ({len(ids)} rows, {len(set(ids))} ids, {args.n} images)":
                len(ids) == len(set(ids)) == args.n,
            "errors.csv identical": a.get("errors.csv") == b.get("errors.csv"),
            "no temporary files left": not temps,
        }
        if ref_rows and out_rows and sorted(ref_rows[1:]) != sorted(out_rows[1:]):
            header, ra, rb = ref_rows[0], {r[0]: r for r in ref_rows[1:]}, {r[0]: r for r in out_rows[1:]}
            diff: dict[str, list[str]] = {}
            for image_id in sorted(set(ra) & set(rb)):
                for c, x, y in zip(header, ra[image_id], rb[image_id]):
                    if x != y:
                        diff.setdefault(c, []).append(f"{image_id}: {x[:60]!r} vs {y[:60]!r}")
            for c, examples in diff.items():
                print(f"  column {c!r} differs in {len(examples)} rows, e.g. {examples[0]}")
        print()
        for name, ok in checks.items():
            print(f"- {'PASS' if ok else 'FAIL'}: {name}")
        verdict = all(checks.values())
        print(f"\n{'IDENTICAL' if verdict else 'DIFFERENT'}: {args.kills} SIGKILLs + resume vs uninterrupted run")
        return 0 if verdict else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
