"""Without the optional extras the core still runs, and asking for an extra's feature is a
usage error (exit 2) whose message says what to install (simulated by hiding the modules)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture
def hide(monkeypatch):
    def hide_modules(*names):
        for name in names:
            for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, mod)
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    return hide_modules


def test_dicom_seg_without_highdicom(hide, tmp_path):
    from anatomix.cli.segment import segment

    hide("highdicom")
    result = CliRunner().invoke(segment, [str(EXAMPLES), "-o", str(tmp_path / "o"), "--format", "dicom-seg"])
    assert result.exit_code == 2 and "pip install 'anatomix[dicom]'" in result.output
    assert not (tmp_path / "o" / "segmentations.csv").exists()


def test_onnx_runtime_without_onnxruntime(hide, tmp_path):
    from anatomix.cli.export import export
    from anatomix.cli.segment import segment

    hide("onnxruntime", "onnx")
    result = CliRunner().invoke(segment, [str(EXAMPLES), "-o", str(tmp_path / "o"), "--runtime", "onnx"])
    assert result.exit_code == 2 and "pip install 'anatomix[onnx]'" in result.output
    result = CliRunner().invoke(export, ["graph", "--format", "onnx", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "pip install 'anatomix[onnx]'" in result.output
