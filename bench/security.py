"""Trust boundaries, measured: hostile files through ``anatomix segment`` (peak memory, one
errors.csv line each) and the payload checkpoint (refused, payload not run).

    python bench/security.py [--out bench/results/security_bench.md]

Builds the files of ``tests/hostile_files.py`` in a temporary folder: a 32000 x 32000 NIfTI gzip
of zeros, a DICOM claiming 60000 x 60000, an RLE DICOM frame inflating to 2 GiB, a ``.npy``
header claiming 10^12 values; runs ``anatomix segment`` on them plus one ordinary image in a
fresh process, and on the ordinary image alone (the baseline: importing torch and the model).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from hostile_files import BOMBS, run_segment_measuring_peak  # noqa: E402

PAYLOAD = """
import sys, torch
class P:
    def __reduce__(self):
        return open, (sys.argv[2], "w")
torch.save({"family": "graph", "model": {}, "x": P()}, sys.argv[1])
"""


def bombs_table(tmp: Path) -> list[str]:
    ok = tmp / "ok.png"
    Image.fromarray(np.full((256, 256), 100, np.uint8)).save(ok)
    files = {name: build(tmp / name) for name, build in BOMBS.items()}
    t0 = time.perf_counter()
    code, peak, rows = run_segment_measuring_peak([*files.values(), ok], tmp / "out")
    seconds = time.perf_counter() - t0
    _, base, _ = run_segment_measuring_peak([ok], tmp / "base")
    reasons = {Path(r[0]).name: r[1] for r in rows}
    lines = ["| file | size on disk | errors.csv reason |", "|---|---:|---|"]
    lines += [f"| {n} | {p.stat().st_size / 1e6:.2f} MB | {reasons.get(n, '(missing!)')} |" for n, p in files.items()]
    return lines + ["", f"`anatomix segment <4 files> ok.png -o out --no-qc --workers 2`: exit {code}, "
                        f"{len(rows)} lines in errors.csv, ok.png segmented: "
                        f"{(tmp / 'out' / 'masks' / 'ok_heart.png').is_file()}, peak RSS {peak:.0f} MB "
                        f"({seconds:.1f} s wall, process start included); the same command on ok.png alone: "
                        f"peak RSS {base:.0f} MB."]


def payload_lines(tmp: Path) -> list[str]:
    evil, marker = tmp / "evil.pt", tmp / "payload-ran"
    subprocess.run([sys.executable, "-c", PAYLOAD, str(evil), str(marker)], check=True)
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(tmp / "a.png")
    r = subprocess.run([sys.executable, "-m", "anatomix.cli.segment", str(tmp / "a.png"), "-o", str(tmp / "o"),
                        "--model", str(evil)], capture_output=True, text=True)
    error = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    return [f"`anatomix segment a.png -o o --model evil.pt`: exit {r.returncode}; payload ran: {marker.exists()}; "
            f"stderr error lines: {len(error)}:", "", f"    {error[0] if error else r.stderr}"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="Also write the tables to this markdown file.")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        lines = ["## Hostile images", "", *bombs_table(Path(d)), "", "## Payload checkpoint", "",
                 *payload_lines(Path(d)), "", "Command: `python bench/security.py`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
