"""ONNX export (extra ``anatomix[onnx]``: onnx + onnxruntime).

``export_onnx(spec, out_dir)`` writes, per network part, ``<part>.onnx`` (``model.onnx`` for a
single network; ``graph.onnx`` and ``pixel.onnx`` for a refined model) with input ``image``
``(batch, 1, S, S)``, a dynamic batch axis and opset :data:`anatomix.export.OPSET`, and
for graph models also ``<part>_decoder.onnx``
(latent ``z`` ``(batch, D)`` and the encoder maps ``skip_i`` -> ``landmarks``: the decoder alone,
for node-wise uncertainty by latent sampling; the main file then also outputs ``mu``,
``logvar`` and ``skip_i``), and ``anatomix_onnx.json``: the model kind, its inputs and outputs, the preprocessing, the
config the runtime needs, the opset, the source checkpoint's SHA-256 and the parity measured
right after the export (torch vs onnxruntime on the same random inputs, batch of 2). The same
JSON is stored in each ONNX file's ``metadata_props`` (key ``anatomix``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from anatomix.errors import AnatomixError
from anatomix.export import OPSET, ExportSpec

MANIFEST = "anatomix_onnx.json"
INSTALL_HINT = "ONNX export and runtime need onnx and onnxruntime: pip install 'anatomix[onnx]'"


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise AnatomixError(INSTALL_HINT) from None


def _is_graph(spec: ExportSpec, part: str) -> bool:
    return spec.kind == "graph" or (spec.kind == "refined" and part == "graph")


def _skips(net) -> list[str]:
    return [f"skip_{i}" for i in range(net.cfg.n_skips)]


def _outputs(spec: ExportSpec, part: str) -> list[str]:
    if spec.kind == "anomaly":
        return list(spec.io["model"]["outputs"])
    if _is_graph(spec, part):
        return ["landmarks", "mu", "logvar", *_skips(spec.networks[part][0])]
    return ["logits"]


def _export(net, inputs: tuple, input_names: list[str], outputs: list[str], opset: int) -> bytes:
    import torch

    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*input_names, *outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(net.eval(), inputs, buf, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def onnx_bytes(net, size: int, outputs: list[str], opset: int = OPSET) -> bytes:
    """Serialised ONNX model of ``net`` for ``(batch, 1, size, size)`` inputs (dynamic batch).

    A :class:`~anatomix.export.networks.GraphNet` with more outputs than ``landmarks`` is
    exported as :class:`~anatomix.export.networks.GraphWithLatent`.
    """
    import torch

    from anatomix.export.networks import GraphNet, GraphWithLatent

    if isinstance(net, GraphNet) and len(outputs) > 1:
        net = GraphWithLatent(net)
    return _export(net, (torch.rand(2, 1, size, size),), ["image"], outputs, opset)


def decoder_bytes(net, opset: int = OPSET) -> bytes:
    """Serialised ONNX model of a :class:`GraphNet`'s decoder: inputs ``z`` and ``skip_i``."""
    import torch

    from anatomix.export.networks import GraphLatentDecoder

    with torch.no_grad():
        mu, _, maps = net.encode(torch.rand(2, 1, net.cfg.image_size, net.cfg.image_size))
    return _export(GraphLatentDecoder(net), (mu, *maps), ["z", *_skips(net)], ["landmarks"], opset)


def session(model: bytes | str | Path, threads: int | None = None):
    """An onnxruntime CPU session (``threads``: intra-op threads; default torch's count)."""
    require_onnx()
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def parity(net, sess, size: int, outputs: list[str], n: int = 2, seed: int = 0) -> dict[str, float]:
    """Max |torch - onnxruntime| of every output on ``n`` random inputs."""
    import torch

    from anatomix.export.networks import GraphNet, GraphWithLatent

    if isinstance(net, GraphNet) and len(outputs) > 1:
        net = GraphWithLatent(net)
    x = torch.from_numpy(np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32))
    with torch.no_grad():
        ref = net.eval()(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = sess.run(outputs, {"image": x.numpy()})
    return {o: float(np.abs(r.numpy() - g).max()) for o, r, g in zip(outputs, ref, got)}


def manifest(spec: ExportSpec, opset: int = OPSET) -> dict[str, Any]:
    """The JSON that describes an export (without parity figures)."""
    from anatomix import __version__

    parts = {}
    for part, (_, config) in spec.networks.items():
        stem = "model" if len(spec.networks) == 1 else part
        parts[part] = {"file": f"{stem}.onnx", "config": config, "outputs": _outputs(spec, part), "io": spec.io[part]}
        if _is_graph(spec, part):
            parts[part]["decoder_file"] = f"{stem}_decoder.onnx"
    extra = {k: v for k, v in spec.extra.items() if k not in ("detector", "parts")}
    if spec.kind == "anomaly":
        det = spec.extra["detector"]
        extra["detector"] = "anatomix.anomaly.detector.Detector (scoring, calibration, statistics) in detector.pt"
        extra["scoring"] = vars(det.scoring)
    return {"format": "anatomix-onnx", "format_version": 1, "anatomix_version": __version__, "name": spec.name,
            "kind": spec.kind, "source_sha256": spec.sha256, "opset": opset, "image_size": spec.image_size,
            "input": {"name": "image", "shape": ["batch", 1, spec.image_size, spec.image_size], "dtype": "float32",
                      "range": [0, 1]},
            "preprocessing": spec.preprocessing, "parts": parts, "extra": extra}


def export_onnx(spec: ExportSpec, out_dir: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Write the ONNX files and ``anatomix_onnx.json`` of ``spec`` into ``out_dir``.

    An anomaly detector also gets ``detector.pt`` (the detector file itself: scoring settings,
    calibration, normal statistics), which the runtime reads for everything but the networks.

    Returns:
        The manifest, with ``parity`` (max abs difference per output, torch vs onnxruntime).
    """
    require_onnx()
    import onnx

    from anatomix.io.atomic import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = manifest(spec, opset)
    for part, (net, _) in spec.networks.items():
        outputs = info["parts"][part]["outputs"]
        data = onnx_bytes(net, spec.image_size, outputs, opset)
        info["parts"][part]["parity_random_inputs"] = parity(net, session(data), spec.image_size, outputs)
        model = onnx.load_from_string(data)
        entry = model.metadata_props.add()
        entry.key, entry.value = "anatomix", json.dumps({k: v for k, v in info.items() if k != "parts"}
                                                        | {"part": part, **info["parts"][part]})
        model.producer_name = "anatomix"
        with atomic_write(out / info["parts"][part]["file"]) as tmp:
            onnx.save(model, str(tmp))
        if "decoder_file" in info["parts"][part]:
            with atomic_write(out / info["parts"][part]["decoder_file"]) as tmp:
                tmp.write_bytes(decoder_bytes(net, opset))
    if spec.kind == "anomaly":
        import shutil

        with atomic_write(out / "detector.pt") as tmp:
            shutil.copyfile(spec.source, tmp)
    if spec.card:
        (out / "README.md").write_text(spec.card, encoding="utf-8")
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return info
