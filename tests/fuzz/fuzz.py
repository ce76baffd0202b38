"""Coverage-guided fuzzing of one target with atheris (``pip install -e '.[fuzz]'``).

    python tests/fuzz/fuzz.py TARGET [SECONDS]

Runs libFuzzer on ``targets.TARGETS[TARGET]`` for SECONDS (default 30), starting from and adding
to ``tests/fuzz_corpus/TARGET/``; a crashing input is written there as ``crash-<sha1>`` (keep it:
the test suite replays the folder). libFuzzer's final statistics (executions, rate, new corpus
units, peak RSS) end the output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["anatomix", "pydicom", "nibabel", "csv"]):
    import nibabel  # noqa: F401
    import pydicom  # noqa: F401
    from targets import TARGETS

    import anatomix.io.chexmask  # noqa: F401 - imported here so that coverage is recorded
    import anatomix.io.dicom_seg  # noqa: F401
    import anatomix.io.read  # noqa: F401


def main() -> None:
    name, seconds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
    corpus = HERE.parent / "fuzz_corpus" / name
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-max_len=8192", "-rss_limit_mb=3072",
                   "-timeout=20", f"-artifact_prefix={corpus}{os.sep}", "-print_final_stats=1"], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
