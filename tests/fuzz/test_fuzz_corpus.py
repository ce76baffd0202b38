"""Replay the fuzz corpus (seeds, inputs the fuzzer found interesting, and every crash found
and fixed) through the fuzz targets: each reader returns or raises only ReadError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import TARGETS  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"


def test_every_target_has_a_seed():
    assert all((CORPUS / t / "seed").is_file() for t in TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target):
    for path in sorted((CORPUS / target).glob("*")):
        TARGETS[target](path.read_bytes())
