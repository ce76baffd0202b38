"""The anomaly pack loader (anatomix.data.anomaly_pack): a hand-made manifest, then the real pack."""

import pytest

from anatomix.data.anomaly_pack import anomaly_cases, pack_folder
from anatomix.errors import ReadError

HEADER = "id,source,source_repo,patient_id,split_upstream,orig_width,orig_height,label,finding,notes\n"


def _pack(tmp_path):
    folder = tmp_path / "cxr-anomaly"
    folder.mkdir()
    (folder / "manifest.csv").write_text(
        HEADER
        + "ZL_A_0001,zhanglab,r,ZL_A,train,224,224,normal,normal,\n"
        + "ZL_B_0001,zhanglab,r,ZL_B,test,224,224,abnormal,pneumonia_viral,\n"
        + "ZL_B_0002,zhanglab,r,ZL_B,test,224,224,normal,normal,\n"
        + "NIH_1,nih,r,NIH_1,external,512,512,abnormal,cardiomegaly,x\n")
    return folder


def test_records_paths_and_filters(tmp_path):
    folder = _pack(tmp_path)
    cases = anomaly_cases(tmp_path)
    assert [c.id for c in cases] == ["ZL_A_0001", "ZL_B_0001", "ZL_B_0002", "NIH_1"]
    first, nih = cases[1], cases[3]
    assert (first.source, first.label, first.finding, first.patient, first.split, first.abnormal) == \
        ("zhanglab", "abnormal", "pneumonia_viral", "ZL_B", "test", True)
    assert first.path == folder / "zhanglab" / "ZL_B_0001.png"
    assert nih.path == folder / "external" / "NIH_1.png" and nih.meta["notes"] == "x"
    assert [c.id for c in anomaly_cases(folder, source="zhanglab", split="test")] == ["ZL_B_0001", "ZL_B_0002"]
    assert [c.id for c in anomaly_cases(tmp_path, label="normal")] == ["ZL_A_0001", "ZL_B_0002"]
    assert pack_folder(folder) == pack_folder(tmp_path) == folder


def test_missing_manifest_or_columns_is_a_read_error(tmp_path):
    with pytest.raises(ReadError, match="manifest.csv"):
        anomaly_cases(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,source\na,zhanglab\n")
    with pytest.raises(ReadError, match="missing columns"):
        anomaly_cases(tmp_path)


def test_real_pack(data_root):
    if not (data_root / "cxr-anomaly" / "manifest.csv").is_file():
        pytest.skip(f"no cxr-anomaly folder in the data pack at {data_root}")
    cases = anomaly_cases(data_root)
    assert {c.label for c in cases} == {"normal", "abnormal"}
    test = anomaly_cases(data_root, source="zhanglab", split="test")
    assert test and all(c.path.is_file() for c in test)
    assert all(c.path.is_file() for c in anomaly_cases(data_root, split="external"))
    # the upstream ZhangLab train split holds the normals that detectors are fitted on
    assert len(anomaly_cases(data_root, source="zhanglab", split="train", label="normal")) > 1000
