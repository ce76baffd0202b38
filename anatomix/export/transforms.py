"""MONAI dictionary transforms and a minimal evaluator for anatomix MONAI Bundles.

They wrap the package's own functions (reading, :func:`~anatomix.data.preprocess.to_model_frame`,
:class:`~anatomix.io.geometry.SquareFrame`, mask post-processing and contour tracing, the mask
writer), so that a bundle run by MONAI's bundle runner gives what ``anatomix segment`` gives.

A bundle's ``inference.json`` uses them as ``preprocessing`` (:class:`LoadRadiographd`,
:class:`ToModelFramed`), ``postprocessing`` (:class:`ToOriginalFramed`, :class:`SaveAnatomyd`)
and ``evaluator`` (:class:`BundleEvaluator`: batches through ``network`` with ``inferer``,
decollates, post-processes; what MONAI's ``SupervisedEvaluator`` does for inference, without
needing pytorch-ignite).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from anatomix.io.geometry import SquareFrame
from anatomix.limits import MAX_PIXELS


def list_images(folder: str) -> list[str]:
    """Radiograph files under ``folder`` (recursive), as ``anatomix segment`` finds them."""
    from anatomix.io.inputs import expand_inputs

    paths, _ = expand_inputs([folder])
    return [str(p) for p in sorted(paths)]


def _frame_to_array(frame: SquareFrame) -> np.ndarray:
    box = frame.box if frame.box is not None else (-1, -1, -1, -1)
    return np.array([frame.height, frame.width, frame.size, *box], dtype=np.int64)


def frame_from_array(a) -> SquareFrame:
    """Inverse of the ``frame`` entry :class:`ToModelFramed` stores (7 integers)."""
    v = [int(x) for x in np.asarray(a).reshape(-1)]
    box = None if v[3] < 0 else tuple(v[3:7])
    return SquareFrame(v[0], v[1], v[2], box)


class LoadRadiographd(MapTransform):
    """Read ``data[key]`` (a path) with :func:`anatomix.io.read_radiograph`: the (H, W) float32
    image in [0, 1] replaces the path, which moves to ``<key>_path``; ``image_id`` is the stem."""

    def __init__(self, keys="image", max_pixels: int = MAX_PIXELS, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_pixels = max_pixels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from anatomix.io.read import read_radiograph

        d = dict(data)
        for key in self.key_iterator(d):
            r = read_radiograph(d[key], self.max_pixels)
            d[f"{key}_path"], d["image_id"], d[key] = str(d[key]), r.image_id, r.pixels
        return d


class ToModelFramed(MapTransform):
    """``(H, W)`` image -> ``(1, S, S)`` float32 tensor by :func:`~anatomix.data.preprocess.to_model_frame`
    (or the detectors' :func:`~anatomix.anomaly.detector.preprocess` with ``detector=True``); the
    frame that maps results back goes to ``frame`` (7 integers)."""

    def __init__(self, keys="image", size: int = 256, crop_borders: bool = False, detector: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size, self.crop_borders, self.detector = int(size), bool(crop_borders), detector

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.detector:
                from anatomix.anomaly.detector import preprocess

                image, frame = preprocess(np.asarray(d[key]), self.size)
            else:
                from anatomix.data.preprocess import to_model_frame

                image, frame = to_model_frame(np.asarray(d[key], dtype=np.float32), self.size, self.crop_borders)
            d[key], d["frame"] = torch.from_numpy(np.ascontiguousarray(image))[None], _frame_to_array(frame)
        return d


class ToOriginalFramed(MapTransform):
    """Network output ``pred`` -> ``landmarks`` (N, 2) and ``masks`` {key: (H, W) bool} in the
    original frame, as :class:`~anatomix.graphs.inference.GraphSegmenter` /
    :class:`~anatomix.pixel.inference.PixelSegmenter` make them.

    Args:
        kind: ``graph`` (``pred``: (N, 2) normalised node positions) or ``pixel`` (``pred``:
            (C, S, S) logits).
        template: graph template name (``lungs_heart`` or ``full``).
        keys_out: pixel channels' structure keys; threshold: their probability threshold;
        postprocess: pixel masks keep their largest component, holes filled (anatomix's default).
    """

    def __init__(self, keys="pred", kind: str = "graph", template: str = "lungs_heart",
                 channels: list[str] | None = None, threshold: float = 0.5, postprocess: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.kind, self.template, self.channels = kind, template, list(channels or [])
        self.threshold, self.postprocess = float(threshold), postprocess

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from anatomix.anatomy import LUNGS_HEART, TEMPLATES, landmarks_to_masks

        d = dict(data)
        frame = frame_from_array(d["frame"])
        shape = (frame.height, frame.width)
        for key in self.key_iterator(d):
            pred = d[key].detach().cpu() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key])
            if self.kind == "graph":
                template = TEMPLATES.get(self.template)
                model_xy = pred.numpy().astype(np.float64) * frame.size
                d["landmarks"] = frame.points_to_original(model_xy)
                d["masks"] = landmarks_to_masks(d["landmarks"], shape, template)
            else:
                from anatomix.anatomy import masks_to_landmarks
                from anatomix.pixel.postprocess import postprocess_masks

                prob = torch.sigmoid(pred).numpy()
                original = np.stack([frame.map_to_original(prob[c]) for c in range(len(self.channels))])
                raw = {k: original[c] >= self.threshold for c, k in enumerate(self.channels)}
                d["masks"] = postprocess_masks(raw) if self.postprocess else raw
                d["landmarks"] = masks_to_landmarks(d["masks"], LUNGS_HEART, missing="nan")
        return d


class SaveAnatomyd(MapTransform):
    """Write ``<output_dir>/<image_id>.json`` (image path, height, width, landmarks (x, y) in
    original pixels) and ``<output_dir>/<image_id>_<structure>.png`` masks (0/255)."""

    def __init__(self, keys="masks", output_dir: str = "eval", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from anatomix.io.atomic import atomic_write
        from anatomix.io.write import write_mask_png

        d = dict(data)
        image_id = str(d["image_id"])
        frame = frame_from_array(d["frame"])
        for key in self.key_iterator(d):
            for structure, m in d[key].items():
                write_mask_png(self.output_dir / f"{image_id}_{structure}.png", m)
        lm = np.asarray(d["landmarks"], dtype=np.float64)
        record = {"image_id": image_id, "path": str(d.get("image_path", "")), "height": frame.height,
                  "width": frame.width, "landmarks": [[float(x), float(y)] for x, y in lm]}
        with atomic_write(self.output_dir / f"{image_id}.json") as tmp:
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        return d


class AnomalyScored(MapTransform):
    """Score ``pred`` (the part maps of :class:`~anatomix.export.networks.AnomalyMapNet`,
    ``(P, S, S)``) with the detector file's own scoring and calibration
    (:meth:`~anatomix.anomaly.detector.Detector.maps_from_parts`, then ``result``; whole image
    or the detector's prior masks, as ``anatomix anomaly score`` without masks) and write
    ``<output_dir>/<image_id>.json`` (score, anomalous, threshold, score_region, regions, raw)."""

    def __init__(self, keys="pred", detector: str = "models/detector.pt", output_dir: str = "eval",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        from anatomix.anomaly.detector import Detector

        self.detector, self.output_dir = Detector.load(detector), Path(output_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from anatomix.io.atomic import atomic_write

        d = dict(data)
        frame = frame_from_array(d["frame"])
        for key in self.key_iterator(d):
            pred = d[key].detach().cpu().numpy() if isinstance(d[key], torch.Tensor) else np.asarray(d[key])
            raw = {p: pred[i][None] for i, p in enumerate(self.detector._parts())}
            m = self.detector.maps_from_parts(raw)[0]
            res = self.detector.result(str(d["image_id"]), d.get("image_path"), m, None, frame)
            d["score"], d["anomalous"] = res.score, res.anomalous
            record = {"image_id": res.image_id, "path": res.path, "score": res.score, "anomalous": res.anomalous,
                      "threshold": res.threshold, "score_region": res.score_region, "regions": res.regions,
                      "raw": res.raw}
            with atomic_write(self.output_dir / f"{res.image_id}.json") as tmp:
                tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        return d


class BundleEvaluator:
    """Run ``network`` over ``dataloader`` with ``inferer`` and apply ``postprocessing`` to each
    decollated item (inference only, no gradients).

    Args:
        device: where the network runs.
        val_data_loader: batches with ``image`` (B, 1, S, S) and the preprocessing's keys.
        network, inferer, postprocessing: the bundle's.
    """

    def __init__(self, device, val_data_loader, network, inferer, postprocessing) -> None:
        self.device, self.loader, self.network = device, val_data_loader, network
        self.inferer, self.postprocessing = inferer, postprocessing
        self.results: list[dict] = []

    def run(self) -> list[dict]:
        from monai.data import decollate_batch

        self.network.eval()
        self.results = []
        with torch.no_grad():
            for batch in self.loader:
                pred = self.inferer(batch["image"].to(self.device), self.network)
                batch = dict(batch, pred=pred)
                for item in decollate_batch(batch):
                    out = self.postprocessing(item)
                    self.results.append({k: out[k] for k in ("image_id", "landmarks", "score", "anomalous")
                                         if k in out})
        return self.results
