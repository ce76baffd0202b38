"""MONAI Bundle export of the graph and pixel segmenters.

Layout (MONAI Bundle specification)::

    DIR/configs/metadata.json    versions, task, description, authors, copyright, the training
                                 data's terms, network_data_format (inputs and outputs)
    DIR/configs/inference.json   for MONAI's bundle runner (``python -m monai.bundle run``) and
                                 ``monai.bundle.ConfigParser``: network_def, preprocessing,
                                 dataset, dataloader, inferer, postprocessing, evaluator,
                                 initialize (loads models/model.pt), run
    DIR/models/model.pt          the network's state_dict (loads with weights_only=True)
    DIR/docs/README.md           the model card
    DIR/docs/license.txt         the code licence and the training data's terms

The network and the transforms are anatomix's (:mod:`anatomix.export.networks`,
:mod:`anatomix.export.transforms`), so the runner needs anatomix installed; the bundle's run
writes ``<output_dir>/<image_id>.json`` (landmarks, original pixels) and
``<output_dir>/<image_id>_<structure>.png`` masks, the same as ``anatomix segment``.

An anomaly detector's bundle has one network (:class:`~anatomix.export.networks.AnomalyMapNet`:
the reconstruction residual and the critic's map, stacked) and keeps the detector file as
``models/detector.pt`` for the scoring (smoothing, normalised sum, regions, calibrated
threshold), done by :class:`~anatomix.export.transforms.AnomalyScored`; its run writes
``<output_dir>/<image_id>.json`` with the score and the verdict of ``anatomix anomaly score``
(whole image or the detector's prior masks). Refined segmenters (two networks and a contour
refinement) are exported as ONNX only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anatomix.errors import AnatomixError
from anatomix.export import ExportSpec

BUNDLE_VERSION = "0.1.0"
REQUIRED_METADATA = ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description",
                     "authors", "copyright", "network_data_format")
"""Keys that the MONAI Bundle specification requires in ``metadata.json`` (checked in tests,
since ``monai.bundle.verify_metadata`` downloads its schema)."""
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
DATA_TERMS = (
    "Trained on the JSRT database images (Japanese Society of Radiological Technology; research and education "
    "use only, JSRT database terms) with the SCR masks (van Ginneken et al., Med. Image Anal. 2006; research use, "
    "cite the paper) and the HybridGNet landmarks (Gaggion et al., IEEE TMI 2022), and, where the model card says "
    "so, on further sources of the anatomix data pack under their own terms (see docs/README.md). "
    "The weights inherit these terms: research use only, not for clinical use.")


ANOMALY_TERMS = ("Fitted on normal pediatric chest X-rays of the ZhangLab set (Kermany, Zhang, Goldbaum, "
                 "Mendeley Data v2, doi:10.17632/rscbjbr9sj.2; CC BY 4.0) when it is the bundled detector; "
                 "otherwise see docs/README.md. Research use only, not for clinical use.")


def _versions() -> dict[str, Any]:
    import monai
    import numpy
    import torch

    from anatomix import __version__

    return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": numpy.__version__,
            "required_packages_version": {"anatomix": __version__}}


def metadata(spec: ExportSpec) -> dict[str, Any]:
    """``configs/metadata.json`` of a graph or pixel segmenter."""
    from anatomix import __version__

    io = spec.io["model"]
    what = ("closed landmark contours (HybridGNet graph model)" if spec.kind == "graph"
            else "dense masks (pixel model)")
    return {
        "schema": SCHEMA, "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by anatomix {__version__} from {spec.source.name} "
                                      f"(sha256 {spec.sha256[:16]})"},
        **_versions(),
        "name": f"anatomix_{spec.name}_cxr_anatomy",
        "task": f"Chest X-ray anatomy: right lung, left lung and heart as {what}",
        "description": (f"anatomix '{spec.name}' model. Input: one frontal chest radiograph, preprocessed by "
                        f"anatomix: {spec.preprocessing['text']}. Output: " + (
                            "node positions (x, y) normalised to the model frame (x S for model pixels); "
                            "postprocessing maps them to original pixels and rasterises the masks."
                            if spec.kind == "graph" else
                            "one logit map per structure (sigmoid, threshold); postprocessing maps them to "
                            "original pixels, keeps the largest component and fills holes.")
                        + " Right/left are the patient's sides."),
        "authors": "anatomix contributors",
        "copyright": "Copyright (c) anatomix contributors; code Apache-2.0; weights under the training data's terms",
        "data_source": DATA_TERMS,
        "data_type": "png, jpeg, tiff, dicom, nifti, npy (anatomix.io.read_radiograph)",
        "image_classes": "single channel radiograph, intensity normalised to [0, 1]",
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in io["outputs"]["pred"]["channel_def"].items()),
        "intended_use": "Research only. Not for clinical use.",
        "references": ["Gaggion N. et al., IEEE TMI 2022 (HybridGNet)",
                       "van Ginneken B. et al., Med. Image Anal. 2006 (SCR)", "Shiraishi J. et al., AJR 2000 (JSRT)"],
        "anatomix": {"kind": spec.kind, "source_sha256": spec.sha256, "preprocessing": spec.preprocessing,
                     **{k: v for k, v in spec.extra.items() if isinstance(v, (str, int, float, list, dict))}},
        "network_data_format": io,
    }


def inference_config(spec: ExportSpec) -> dict[str, Any]:
    """``configs/inference.json`` of a graph or pixel segmenter."""
    _, config = spec.networks["model"]
    pre = spec.preprocessing
    if spec.kind == "graph":
        network_def = {"_target_": "anatomix.export.networks.GraphNet", **config}
        to_original = {"_target_": "anatomix.export.transforms.ToOriginalFramed", "keys": "pred", "kind": "graph",
                       "template": spec.extra["template"]}
    else:
        network_def = {"_target_": "anatomix.export.networks.pixel_network", **config}
        to_original = {"_target_": "anatomix.export.transforms.ToOriginalFramed", "keys": "pred", "kind": "pixel",
                       "channels": spec.extra["keys"], "threshold": spec.extra["threshold"]}
    return {
        "imports": ["$import torch", "$import anatomix.export.transforms as anatomix_transforms"],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$anatomix_transforms.list_images(@dataset_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "anatomix.export.transforms.LoadRadiographd", "keys": "image"},
            {"_target_": "anatomix.export.transforms.ToModelFramed", "keys": "image", "size": pre["size"],
             "crop_borders": pre["crop_borders"]}]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            to_original, {"_target_": "anatomix.export.transforms.SaveAnatomyd", "keys": "masks",
                          "output_dir": "@output_dir"}]},
        "evaluator": {"_target_": "anatomix.export.transforms.BundleEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                      "postprocessing": "@postprocessing"},
        "initialize": ["$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))"],
        "run": ["$@evaluator.run()"],
    }


LICENSE = """anatomix code: Apache License 2.0.

Model weights: {terms}
"""


def export_bundle(spec: ExportSpec, out_dir: str | Path) -> Path:
    """Write the MONAI Bundle of a graph or pixel segmenter into ``out_dir``.

    Raises:
        AnatomixError: a model kind that has no bundle form (anomaly, refined).
    """
    import torch

    from anatomix.io.atomic import atomic_write

    if spec.kind not in ("graph", "pixel", "anomaly"):
        raise AnatomixError(f"a {spec.kind!r} model has no MONAI Bundle form here; use --format onnx")
    out = Path(out_dir)
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if spec.kind == "anomaly":
        import shutil

        net, meta, config = _anomaly_parts(spec)
        with atomic_write(out / "models" / "detector.pt") as tmp:
            shutil.copyfile(spec.source, tmp)
    else:
        (net, _), meta, config = spec.networks["model"], metadata(spec), inference_config(spec)
    with atomic_write(out / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp)
    for name, content in (("metadata.json", meta), ("inference.json", config)):
        with atomic_write(out / "configs" / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    card = spec.card or f"# anatomix {spec.name}\n\nNo model card was found next to {spec.source.name}.\n"
    (out / "docs" / "README.md").write_text(card, encoding="utf-8")
    terms = ANOMALY_TERMS if spec.kind == "anomaly" else DATA_TERMS
    (out / "docs" / "license.txt").write_text(LICENSE.format(terms=terms), encoding="utf-8")
    return out


def _anomaly_parts(spec: ExportSpec):
    """(AnomalyMapNet with the detector's weights, metadata.json, inference.json) of a detector."""
    from anatomix import __version__
    from anatomix.export.networks import AnomalyMapNet

    det = spec.extra["detector"]
    parts = det._parts()
    critic_cfg = dict(det.critic.config) if det.critic is not None else None
    config = {"method": det.method, "model_config": dict(det.model.config), "parts": parts,
              "critic_config": critic_cfg}
    net = AnomalyMapNet(**config)
    net.model.load_state_dict(det.model.state_dict())
    if net.critic is not None:
        net.critic.load_state_dict(det.critic.state_dict())
    size = det.image_size
    image = spec.io["model"]["inputs"]["image"]
    io = {"inputs": {"image": image},
          "outputs": {"pred": {"type": "image", "format": "magnitude", "num_channels": len(parts),
                               "spatial_shape": [size, size], "dtype": "float32", "value_range": [],
                               "is_patch_data": False,
                               "channel_def": {str(i): f"{p} map (unsmoothed)" for i, p in enumerate(parts)}}}}
    meta = {
        "schema": SCHEMA, "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by anatomix {__version__} from {spec.source.name} "
                                      f"(sha256 {spec.sha256[:16]})"},
        **_versions(),
        "name": f"anatomix_{spec.name}_cxr_anomaly",
        "task": "Normal-only chest X-ray anomaly screening: a score and a verdict per radiograph",
        "description": (f"anatomix detector '{spec.name}' ({det.method}, residual {det.scoring.residual}). Input: "
                        f"{spec.preprocessing['text']}. The network returns its part maps "
                        f"({', '.join(parts)}); postprocessing smooths them, sums the z-scored parts, reduces "
                        f"them over the image (or the detector's prior masks) and applies the calibration "
                        f"kept in models/detector.pt. Recalibrate on local normals with "
                        f"`anatomix anomaly calibrate` before trusting the threshold at a new site."),
        "authors": "anatomix contributors",
        "copyright": "Copyright (c) anatomix contributors; code Apache-2.0; weights under the training data's terms",
        "data_source": ANOMALY_TERMS,
        "data_type": "png, jpeg, tiff, dicom, nifti, npy (anatomix.io.read_radiograph)",
        "image_classes": "single channel radiograph, intensity in [0, 1]",
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in io["outputs"]["pred"]["channel_def"].items()),
        "intended_use": "Research only. Not for clinical use.",
        "references": ["Kermany D. S. et al., Cell 2018 (ZhangLab pediatric chest X-rays)"],
        "anatomix": {"kind": "anomaly", "source_sha256": spec.sha256, "preprocessing": spec.preprocessing,
                     "scoring": vars(det.scoring)},
        "network_data_format": io,
    }
    inference = {
        "imports": ["$import torch", "$import anatomix.export.transforms as anatomix_transforms"],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "detector_path": "$@bundle_root + '/models/detector.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$anatomix_transforms.list_images(@dataset_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "anatomix.export.networks.AnomalyMapNet", **config},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "anatomix.export.transforms.LoadRadiographd", "keys": "image"},
            {"_target_": "anatomix.export.transforms.ToModelFramed", "keys": "image", "size": size,
             "detector": True}]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "anatomix.export.transforms.AnomalyScored", "keys": "pred",
                           "detector": "@detector_path", "output_dir": "@output_dir"},
        "evaluator": {"_target_": "anatomix.export.transforms.BundleEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                      "postprocessing": "@postprocessing"},
        "initialize": ["$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))"],
        "run": ["$@evaluator.run()"],
    }
    return net, meta, inference
