"""Run exported ONNX models with onnxruntime inside anatomix's own per-image pipeline.

The segmenters here are the package's :class:`~anatomix.graphs.inference.GraphSegmenter`,
:class:`~anatomix.pixel.inference.PixelSegmenter` and :class:`~anatomix.refine.RefinedSegmenter`
with their torch network replaced by an onnxruntime session (:class:`OrtNetwork`): reading,
preprocessing, mapping back to the original frame, post-processing and writing are the same
code as with torch. ``--runtime onnx`` on ``anatomix segment`` uses :func:`load_onnx_segmenter`.

Node-wise uncertainty (latent sampling) runs too: the graph export's main file also returns
``mu``, ``logvar`` and the skip maps, and its decoder file decodes latents drawn here with the same
seeded torch generator as :meth:`~anatomix.graphs.model.HybridGNet.sample`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from anatomix.errors import AnatomixError
from anatomix.export.onnx import MANIFEST, require_onnx, session
from anatomix.graphs.inference import GraphSegmenter
from anatomix.pixel.inference import PixelSegmenter


class OrtNetwork(nn.Module):
    """An onnxruntime session in the place of a torch network (CPU; no parameters).

    ``forward(image)`` returns the session's outputs as torch tensors: one tensor, or a
    namespace with ``landmarks`` for graph models (as :class:`HybridGNet` returns it).

    Args:
        share_once: keep the outputs of the last run for ONE more call with the same input
            (a detector asks for its residual map and then for its critic map of the same batch,
            which one session run gives together); then forget them.
    """

    def __init__(self, sess, outputs: list[str], wrap_landmarks: bool = False, share_once: bool = False,
                 **attributes: Any) -> None:
        super().__init__()
        self.sess, self.outputs, self.wrap_landmarks = sess, list(outputs), wrap_landmarks
        self.share_once = share_once
        self._kept: tuple[np.ndarray, list] | None = None
        for k, v in attributes.items():
            setattr(self, k, v)

    def run(self, image: torch.Tensor) -> list[np.ndarray]:
        x = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0].shape == x.shape and np.array_equal(kept[0], x):
            return kept[1]
        got = self.sess.run(self.outputs, {"image": x})
        if self.share_once:
            self._kept = (x, got)
        return got

    def forward(self, image: torch.Tensor):
        got = [torch.from_numpy(g) for g in self.run(image)]
        if self.wrap_landmarks:
            return SimpleNamespace(landmarks=got[0])
        return got[0] if len(got) == 1 else tuple(got)


class OrtGraph(OrtNetwork):
    """The graph model's sessions: ``forward`` as :class:`HybridGNet` (landmarks), :meth:`sample`
    and :meth:`mean_and_samples` as HybridGNet's (the same draws of the same generators)."""

    def __init__(self, sess, decoder, cfg) -> None:
        outputs = [o.name for o in sess.get_outputs()]
        super().__init__(sess, outputs, wrap_landmarks=True, cfg=cfg)
        self.decoder = decoder

    def sample(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        got = self._encoded(x)
        mu = torch.from_numpy(got["mu"])
        return self._decode(got, torch.randn((n, *mu.shape), generator=generator, dtype=mu.dtype))

    def mean_and_samples(self, x: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``HybridGNet.mean_and_samples``: landmarks (B, N, 2) and draws (n, B, N, 2)."""
        from anatomix.graphs.model import per_image_noise

        got = self._encoded(x)
        eps = per_image_noise(torch.from_numpy(got["mu"]), n, seed)
        return torch.from_numpy(got["landmarks"]), self._decode(got, eps)

    def _encoded(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        if self.decoder is None:
            raise AnatomixError("this ONNX export has no decoder file: no latent sampling (re-export it)")
        return dict(zip(self.outputs, self.run(x)))

    def _decode(self, got: dict[str, np.ndarray], eps: torch.Tensor) -> torch.Tensor:
        """Landmarks (n, B, N, 2) of ``z = mu + eps * sigma`` for eps (n, B, D)."""
        mu, logvar = torch.from_numpy(got["mu"]), torch.from_numpy(got["logvar"])
        n, b, d = eps.shape
        z = (mu + eps * torch.exp(0.5 * logvar)).reshape(n * b, d)
        feeds = {"z": z.numpy()}
        for name in self.outputs:
            if name.startswith("skip_"):
                feeds[name] = np.ascontiguousarray(np.tile(got[name], (n, 1, 1, 1)))
        landmarks = self.decoder.run(["landmarks"], feeds)[0]
        return torch.from_numpy(landmarks).view(n, b, -1, 2)


class OnnxGraphSegmenter(GraphSegmenter):
    """:class:`GraphSegmenter` whose network runs in onnxruntime."""

    runtime = "onnxruntime"


class OnnxPixelSegmenter(PixelSegmenter):
    """:class:`PixelSegmenter` whose network runs in onnxruntime."""

    runtime = "onnxruntime"


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AnatomixError(f"{folder}: not an anatomix ONNX export ({MANIFEST}: {e})") from None


def _graph(sess_or_file, config: dict, threads, decoder=None) -> OnnxGraphSegmenter:
    from anatomix.graphs.model import GraphConfig

    cfg = GraphConfig.from_dict(config["graph_config"])
    net = OrtGraph(session(sess_or_file, threads), None if decoder is None else session(decoder, threads), cfg)
    return OnnxGraphSegmenter(net, "cpu")


def _pixel(sess_or_file, config: dict, threads) -> OnnxPixelSegmenter:
    from anatomix.pixel.models import PixelConfig

    cfg = PixelConfig.from_dict(config["pixel_config"])
    return OnnxPixelSegmenter(OrtNetwork(session(sess_or_file, threads), ["logits"]), cfg, "cpu")


def load_onnx_segmenter(name_or_path: str, trust: bool = False, threads: int | None = None):
    """A segmenter that runs ONNX: from an export folder (``anatomix export ... --format onnx``),
    or exported in memory from a bundled name or checkpoint.

    Raises:
        AnatomixError: onnxruntime missing, not a segmenter, or a bad export folder.
    """
    require_onnx()
    folder = Path(name_or_path)
    if folder.is_dir():
        info = _read_manifest(folder)
        kind = info["kind"]
        files = {p: folder / v["file"] for p, v in info["parts"].items()}
        decoders = {p: folder / v["decoder_file"] for p, v in info["parts"].items() if "decoder_file" in v}
        configs = {p: v["config"] for p, v in info["parts"].items()}
        refine = info["extra"].get("refine_config")
        name = info.get("name", folder.name)
    else:
        from anatomix.export import load_spec
        from anatomix.export.onnx import _is_graph, _outputs, decoder_bytes, onnx_bytes

        spec = load_spec(name_or_path, trust)
        kind, refine, name = spec.kind, spec.extra.get("refine_config"), name_or_path
        files, configs, decoders = {}, {}, {}
        for part, (net, config) in spec.networks.items():
            files[part], configs[part] = onnx_bytes(net, spec.image_size, _outputs(spec, part)), config
            if _is_graph(spec, part):
                decoders[part] = decoder_bytes(net)
    if kind == "graph":
        seg = _graph(files["model"], configs["model"], threads, decoders.get("model"))
    elif kind == "pixel":
        seg = _pixel(files["model"], configs["model"], threads)
    elif kind == "refined":
        from anatomix.refine import RefineConfig, RefinedSegmenter

        seg = RefinedSegmenter(_graph(files["graph"], configs["graph"], threads, decoders.get("graph")),
                               _pixel(files["pixel"], configs["pixel"], threads), RefineConfig(**refine))
        seg.runtime = "onnxruntime"
    else:
        raise AnatomixError(f"{name_or_path}: a {kind!r} model is not a segmenter")
    seg.model_name = str(name)
    return seg


def onnx_detector(detector, sess_or_file, threads: int | None = None):
    """The same :class:`~anatomix.anomaly.detector.Detector` (scoring, calibration, statistics)
    with its reconstruction model and critic running in onnxruntime.

    Args:
        detector: the detector as loaded from its file.
        sess_or_file: its exported ``model.onnx`` (path or bytes).
    """
    import copy

    det = copy.copy(detector)
    outputs = ["residual"] + (["critic_logits"] if detector.critic is not None else [])
    net = OrtNetwork(session(sess_or_file, threads), outputs, share_once=len(detector._parts()) > 1)
    part = detector._parts()[0]
    exported = part if part != "critic" else "ssim"

    class _Model(nn.Module):
        method, image_size = detector.method, detector.image_size

        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # tells Detector the device

        def anomaly_map(self, x, residual="auto"):
            if residual != exported:
                raise AnatomixError(f"the ONNX export holds the {exported!r} residual, not {residual!r}")
            out = net(x)
            return out[0] if isinstance(out, tuple) else out

    class _Critic(nn.Module):
        def forward(self, x):
            return net(x)[1]

    det.model = _Model().eval()
    det.critic = _Critic().eval() if detector.critic is not None else None
    det.runtime = "onnxruntime"
    return det
