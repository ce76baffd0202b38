"""Models that leave anatomix: MONAI Bundles and ONNX files, and the onnxruntime runtime.

- :func:`anatomix.export.bundle.export_bundle`: a MONAI Bundle (``configs/metadata.json``,
  ``configs/inference.json`` for MONAI's bundle runner, ``models/model.pt``, ``docs/``).
- :func:`anatomix.export.onnx.export_onnx`: ``model.onnx`` (opset :data:`OPSET`, dynamic batch)
  and ``anatomix_onnx.json`` (what the model takes and returns, its preprocessing and the parity
  measured at export); extra ``anatomix[onnx]``.
- :mod:`anatomix.export.runtime`: segmenters and detectors that run those files with
  onnxruntime inside the package's own per-image pipeline (``anatomix segment --runtime onnx``).

The exported networks (:mod:`anatomix.export.networks`) take exactly the model input of the
package's preprocessing: ``image`` ``(B, 1, S, S)`` float32 in [0, 1] after
:func:`anatomix.data.preprocess.to_model_frame` (segmenters: crop to the exposed field when the
model says so, pad to a centred square, resize to ``S``, robust 0.5-99.5 percentile min-max) or
:func:`anatomix.anomaly.detector.preprocess` (detectors: pad, resize, clip).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPSET = 17
"""ONNX opset of every export (GridSample needs 16, LayerNormalization 17)."""
FORMATS = ("bundle", "onnx")


@dataclass
class ExportSpec:
    """One model ready to leave the package.

    Attributes:
        name: registry name or checkpoint stem.
        kind: ``graph`` | ``pixel`` | ``refined`` | ``anomaly``.
        source: the checkpoint file.
        sha256: its SHA-256.
        networks: {part: (torch network in export form, its config)}; one part (``model``) except
            ``refined`` (``graph`` and ``pixel``).
        image_size: side ``S`` of the model input.
        io: {part: {"inputs": {...}, "outputs": {...}}} in MONAI's ``network_data_format`` terms.
        preprocessing: how the input is made (text and parameters).
        extra: anything else the runtime needs (pixel keys and threshold, refine config, the
            detector state without its weights).
        card: the model card (Markdown) when there is one.
    """

    name: str
    kind: str
    source: Path
    sha256: str
    networks: dict[str, tuple[Any, dict]]
    image_size: int
    io: dict[str, dict]
    preprocessing: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    card: str | None = None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _io_segmenter(kind: str, size: int, channels: int, keys: list[str]) -> dict:
    image = {"type": "image", "format": "magnitude", "modality": "DX", "num_channels": 1,
             "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
             "channel_def": {"0": "image"}}
    if kind == "graph":
        out = {"type": "object", "format": "landmarks", "num_channels": channels, "spatial_shape": [2],
               "dtype": "float32", "value_range": [], "is_patch_data": False,
               "channel_def": {"0": f"node positions (N={channels}, (x, y) / {size}): {', '.join(keys)}"}}
        return {"inputs": {"image": image}, "outputs": {"pred": out}}
    out = {"type": "image", "format": "segmentation", "num_channels": channels, "spatial_shape": [size, size],
           "dtype": "float32", "value_range": [], "is_patch_data": False,
           "channel_def": {str(i): f"{k} logit (sigmoid: probability)" for i, k in enumerate(keys)}}
    return {"inputs": {"image": image}, "outputs": {"pred": out}}


def _segmenter_preprocessing(size: int, crop_borders: bool) -> dict:
    return {"function": "anatomix.data.preprocess.to_model_frame", "size": size, "crop_borders": bool(crop_borders),
            "text": ("read the radiograph as float32 (H, W) in [0, 1], lungs dark (anatomix.io.read_radiograph); "
                     + ("crop to the exposed field (anatomix.data.preprocess.exposed_field); " if crop_borders else "")
                     + f"pad to a centred square with zeros, resize to {size}x{size} (bilinear, antialiased); "
                       "map the 0.5 and 99.5 percentiles to 0 and 1 and clip "
                       "(anatomix.io.geometry.SquareFrame maps results back exactly)")}


def load_spec(name_or_path: str, trust: bool = False) -> ExportSpec:
    """Read a bundled model or a checkpoint into an :class:`ExportSpec`.

    Raises:
        AnatomixError: unknown model or family; CheckpointError: refused or unreadable file.
    """
    from anatomix.anomaly.detector import ENSEMBLE_FORMAT
    from anatomix.errors import AnatomixError, UsageError
    from anatomix.models import REGISTRY, load_checkpoint, resolve

    path = resolve(name_or_path)
    name = name_or_path if name_or_path in REGISTRY else path.stem
    card = path.with_suffix(".md").read_text(encoding="utf-8") if path.with_suffix(".md").is_file() else None
    state = load_checkpoint(path, trust=trust)
    digest = _sha256(path)
    if state.get("format") == "anatomix-anomaly-detector":
        return _anomaly_spec(name, path, digest, state, card, trust)
    if state.get("format") == ENSEMBLE_FORMAT:
        raise UsageError(f"{path}: an ensemble of detectors has no single network to export; export the "
                         f"detectors it is made of")
    family = state.get("family") or ("graph" if "graph_config" in state else None)
    if family == "graph":
        from anatomix.anatomy import TEMPLATES
        from anatomix.export.networks import GraphNet

        config = dict(state["graph_config"])
        net = GraphNet(config)
        net.net.load_state_dict(state["model"])
        size, crop = net.cfg.image_size, net.cfg.crop_borders
        template = TEMPLATES.get(net.cfg.template)
        return ExportSpec(name, "graph", path, digest, {"model": (net.eval(), {"graph_config": config})}, size,
                          {"model": _io_segmenter("graph", size, template.n_nodes, list(template.keys))},
                          _segmenter_preprocessing(size, crop), {"template": net.cfg.template}, card)
    if family == "pixel":
        from anatomix.pixel.models import PixelConfig

        config = PixelConfig.from_dict(state["pixel_config"])
        net = config.build()
        net.load_state_dict(state["model"])
        size = config.image_size
        keys = list(config.keys)
        return ExportSpec(name, "pixel", path, digest, {"model": (net.eval(), {"pixel_config": config.to_dict()})},
                          size, {"model": _io_segmenter("pixel", size, len(keys), keys)},
                          _segmenter_preprocessing(size, config.crop_borders),
                          {"keys": keys, "threshold": float(config.threshold)}, card)
    if family == "refined":
        from anatomix.refine import RefineConfig

        ref = {k: (state[k] if state[k] in REGISTRY else str(path.parent / state[k])) for k in ("graph", "pixel")}
        graph, pixel = load_spec(ref["graph"], trust), load_spec(ref["pixel"], trust)
        return ExportSpec(name, "refined", path, digest,
                          {"graph": graph.networks["model"], "pixel": pixel.networks["model"]},
                          graph.image_size, {"graph": graph.io["model"], "pixel": pixel.io["model"]},
                          {"graph": graph.preprocessing, "pixel": pixel.preprocessing},
                          {"refine_config": RefineConfig(**state.get("refine_config", {})).to_dict(),
                           "graph": graph.extra, "pixel": pixel.extra, "parts": {"graph": graph, "pixel": pixel}},
                          card or graph.card)
    raise AnatomixError(f"{path}: cannot export model family {family!r}")


def _anomaly_spec(name: str, path: Path, digest: str, state: dict, card: str | None, trust: bool) -> ExportSpec:
    from anatomix.anomaly.detector import Detector
    from anatomix.export.networks import AnomalyNet

    det = Detector.load(path, trust=trust)
    residual = det._parts()[0]
    if residual == "critic":
        residual = "ssim"  # a critic-only detector still exports a residual head (unused by its score)
    critic_cfg = dict(det.critic.config) if det.critic is not None else None
    net = AnomalyNet(det.method, dict(det.model.config), residual, critic_cfg)
    net.model.load_state_dict(det.model.state_dict())
    if net.critic is not None:
        net.critic.load_state_dict(det.critic.state_dict())
    size = det.image_size
    outputs = {"residual": {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": [size, size],
                            "dtype": "float32", "value_range": [], "is_patch_data": False,
                            "channel_def": {"0": f"{residual} residual map"}}}
    if critic_cfg is not None:
        side = size // 4 - 1
        outputs["critic_logits"] = {"type": "image", "format": "magnitude", "num_channels": 1,
                                    "spatial_shape": [side, side], "dtype": "float32", "value_range": [],
                                    "is_patch_data": False, "channel_def": {"0": "mean patch realness logit"}}
    io = {"inputs": {"image": {"type": "image", "format": "magnitude", "modality": "DX", "num_channels": 1,
                               "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                               "is_patch_data": False, "channel_def": {"0": "image"}}},
          "outputs": outputs}
    pre = {"function": "anatomix.anomaly.detector.preprocess", "size": size,
           "text": f"read as float32 (H, W) in [0, 1]; pad to a centred square with zeros, resize to {size}x{size} "
                   "(bilinear, antialiased), clip to [0, 1]"}
    config = {"method": det.method, "model_config": dict(det.model.config), "residual": residual,
              "critic_config": critic_cfg}
    return ExportSpec(name, "anomaly", path, digest, {"model": (net.eval(), config)}, size, {"model": io}, pre,
                      {"detector": det}, card)
