"""`anatomix.qc.run.run_qc`: the library function under `anatomix qc` (same table, written atomically)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anatomix.cli.qc import qc
from anatomix.errors import AnatomixError, UsageError
from anatomix.qc import QC_COLUMNS, QCSummary, run_qc
from anatomix.qc.rca import load_references


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of two images with mask PNGs: one plausible, one with the lungs swapped."""
    refs = load_references(None)
    img = np.kron(refs.images[0], np.ones((2, 2), np.float32))
    masks = {k: np.kron(refs.masks[0, i] >= 0.5, np.ones((2, 2), bool)) for i, k in enumerate(refs.keys)}
    root = tmp_path_factory.mktemp("qcrun") / "f"
    root.mkdir()
    swapped = {"lungR": masks["lungL"], "lungL": masks["lungR"], "heart": masks["heart"]}
    for name, ms in (("good", masks), ("swapped", swapped)):
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"{name}.png")
        for k, m in ms.items():
            Image.fromarray(m.astype(np.uint8) * 255).save(root / f"{name}_{k}.png")
    return root


def test_run_qc_writes_what_the_command_writes(tmp_path, folder):
    s = run_qc(folder, tmp_path / "lib", rca=False, report=False)
    assert isinstance(s, QCSummary) and (s.images, s.passed, s.flagged) == (2, 1, 1) and s.report is None
    assert s.table == tmp_path / "lib" / "qc.csv"
    assert s.line() == f"2 images: 1 pass, 1 flagged -> {s.table}"
    res = CliRunner().invoke(qc, [str(folder), "-o", str(tmp_path / "cli"), "--no-rca", "--no-report"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"2 images: 1 pass, 1 flagged -> {tmp_path / 'cli' / 'qc.csv'}"
    table = s.table.read_bytes()
    assert table == (tmp_path / "cli" / "qc.csv").read_bytes()
    assert table.startswith(",".join(["image_id", "path", *QC_COLUMNS]).encode() + b"\r\n")
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["qc.csv"]  # no temporary file left


def test_run_qc_limit_and_report(tmp_path, folder):
    s = run_qc(folder, tmp_path / "o", rca=False, limit=1)
    assert (s.images, s.passed) == (1, 1) and s.report == tmp_path / "o" / "report" / "index.html"
    assert s.report.is_file() and s.line().endswith(f", {s.report}")
    assert len(s.table.read_text().splitlines()) == 2


def test_qc_table_appears_only_when_complete(tmp_path, folder, monkeypatch):
    out = tmp_path / "o"
    run_qc(folder, out, rca=False, report=False)
    before = (out / "qc.csv").read_bytes()
    import anatomix.qc.run as run_mod

    calls = []

    def failing_assess(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed half-way")
        return run_mod.assess.__wrapped__(*args, **kwargs)

    failing_assess.__wrapped__ = run_mod.assess
    monkeypatch.setattr(run_mod, "assess", failing_assess)
    with pytest.raises(RuntimeError, match="half-way"):
        run_qc(folder, out, rca=False, report=False)
    assert len(calls) == 2
    assert (out / "qc.csv").read_bytes() == before  # the earlier table is untouched
    assert sorted(p.name for p in out.iterdir()) == ["qc.csv"]


def test_bad_source_and_bad_reference(tmp_path, folder):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UsageError, match="expected a folder"):
        run_qc(tmp_path / "x.txt", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnatomixError, match="no labelled reference"):
        run_qc(folder, tmp_path / "o", reference=tmp_path / "empty")
    res = CliRunner().invoke(qc, [str(folder), "-o", str(tmp_path / "o"), "--reference", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no labelled reference" in res.output
