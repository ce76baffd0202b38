"""Registry of bundled models (name -> kind, weights file, model card) and the one checkpoint
loader (:func:`load_checkpoint`), which reads every ``.pt`` file without running code from it."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from anatomix.errors import CheckpointError, UsageError
from anatomix.registry import Registry

if TYPE_CHECKING:
    from anatomix.segmentation import Segmenter

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    """A bundled model.

    Attributes:
        name: registry name (``graph``, ``pixel``, ``anomaly``...).
        kind: ``graph`` | ``pixel`` | ``refined`` | ``anomaly`` | ``qc``.
        filename: checkpoint file inside ``anatomix/weights``.
        summary: one line for ``anatomix info``.
    """

    name: str
    kind: str
    filename: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def card(self) -> Path:
        return self.path.with_suffix(".md")

    @property
    def available(self) -> bool:
        return self.path.is_file()


REGISTRY: Registry[ModelEntry] = Registry("bundled model")
"""Bundled models by name (registration order is ``anatomix info``'s order)."""
for _entry in (
    ModelEntry("refined", "refined", "refined_lungs_heart.pt",
               "Default: graph contours refined onto the pixel model's boundaries (names 'graph' and "
               "'pixel'; research use)"),
    ModelEntry("graph", "graph", "hybridgnet_lungs_heart.pt",
               "HybridGNet lungs+heart landmark contours (JSRT + Montgomery + Shenzhen, research use)"),
    ModelEntry("qc_atlases", "qc", "qc_atlases.npz",
               "RCA reference atlases for mask QC: 11 cluster-mean images (JSRT/SCR, research use)"),
    ModelEntry("pixel", "pixel", "pixel_unet_lungs_heart.pt",
               "MONAI UNet lungs+heart dense masks (mean of 3 seeds), landmarks traced (JSRT + Montgomery + "
               "Shenzhen, research use)"),
    ModelEntry("anomaly", "anomaly", "anomaly_pediatric.pt",
               "Normal-only anomaly detector (conv AE + realness critic, 64 px), ZhangLab pediatric "
               "normals, CC BY 4.0"),
    ModelEntry("anomaly-ensemble", "anomaly", "anomaly_ensemble.pt",
               "Pediatric ensemble, every choice made on normals only: a feature-distillation student + "
               "lung-zone statistics + SimSID-style in-painting with a realness critic (sum of z-scores, "
               "128-256 px; needs lung masks, segments by itself), ZhangLab pediatric normals, CC BY 4.0"),
    ModelEntry("anomaly-adult", "anomaly", "anomaly_adult.pt",
               "Normal-only ensemble for adult films (reverse distillation, 128 px, self-supervised teacher; "
               "+ lung-zone statistics; needs lung masks), JSRT + Montgomery + Shenzhen normals, research use"),
):
    REGISTRY.register(_entry.name, _entry)

SEGMENTER_FAMILIES: Registry = Registry("segmenter family")
"""Checkpoint ``family`` -> the segmenter class that builds itself from the loaded checkpoint
(``from_state(state, path, device, trust)``)."""
SEGMENTER_FAMILIES.register("graph", "anatomix.graphs.inference:GraphSegmenter")
SEGMENTER_FAMILIES.register("pixel", "anatomix.pixel.inference:PixelSegmenter")
SEGMENTER_FAMILIES.register("refined", "anatomix.refine:RefinedSegmenter")


def list_models() -> list[ModelEntry]:
    """The bundled models, in registration order."""
    return [REGISTRY.get(n) for n in REGISTRY]


def resolve(name_or_path: str) -> Path:
    """A registry name or a checkpoint path -> checkpoint path.

    Raises:
        CheckpointError: a bundled model whose weights are missing.
        UsageError: neither a registry name nor an existing file (the message lists the names).
    """
    if name_or_path in REGISTRY:
        entry = REGISTRY.get(name_or_path)
        if not entry.available:
            raise CheckpointError(entry.path, f"bundled model {name_or_path!r} has no weights here")
        return entry.path
    p = Path(name_or_path)
    if p.is_file():
        return p
    raise UsageError(f"unknown model {name_or_path!r}: not a file and not one of {', '.join(REGISTRY)}")


# -- loading models ----------------------------------------------------------------------------
def load_segmenter(name_or_path: str = "refined", device: Any = "cpu", trust: bool = False) -> Segmenter:
    """Load a segmenter by bundled name (``refined``, the default; ``graph``; ``pixel``) or
    checkpoint path.

    The file is read once by :func:`load_checkpoint` (without ``trust``, a file that needs a full
    unpickle is refused and nothing in it runs); its ``family`` key picks the class in
    :data:`SEGMENTER_FAMILIES` (graph, pixel, refined), which builds itself from the loaded dict.

    Args:
        name_or_path: registry name or path to a ``.pt`` checkpoint.
        device: torch device or its name.
        trust: read a file that needs a full unpickle, which RUNS CODE FROM THE FILE.

    Returns:
        A :class:`~anatomix.segmentation.Segmenter`; its ``model_name`` is ``name_or_path``
        (how outputs name the model, :func:`model_identity`).

    Raises:
        CheckpointError: missing, unreadable or refused file; contents that do not build a model.
        UsageError: unknown name or family.
    """
    path = resolve(name_or_path)
    state = load_checkpoint(path, trust=trust)
    family = state.get("family") or ("graph" if "graph_config" in state else None)
    if family not in SEGMENTER_FAMILIES:
        raise CheckpointError(path, f"unknown model family {family!r} (expected one of "
                                    f"{', '.join(SEGMENTER_FAMILIES)})")
    segmenter = SEGMENTER_FAMILIES.get(family).from_state(state, path, device, trust)
    segmenter.model_name = str(name_or_path)
    return segmenter


DEFAULT_DETECTOR = "anomaly-ensemble"
"""The bundled detector that ``anatomix anomaly score`` and ``calibrate`` use without ``--detector``."""


def load_detector(name_or_path: str = DEFAULT_DETECTOR, trust: bool = False):
    """Load an anomaly detector by bundled name (``anomaly-ensemble``, ``anomaly``, ``anomaly-adult``)
    or detector file (a single detector or an ensemble).

    Returns:
        An :class:`anatomix.anomaly.detector.Detector` or
        :class:`~anatomix.anomaly.ensemble.EnsembleDetector`.

    Raises:
        CheckpointError: missing, unreadable, refused or malformed file.
        UsageError: unknown name.
    """
    from anatomix.anomaly.detector import Detector

    return Detector.load(resolve(name_or_path), trust=trust)


# -- checkpoints -------------------------------------------------------------------------------
TRUST_HELP = ("Load the checkpoint with a full unpickle, which RUNS CODE FROM THE FILE: only for files "
              "you trust (better: convert them once with `anatomix convert-checkpoint`).")
"""Help text of every ``--trust-checkpoint`` option."""

_NUMERIC_DTYPES = "?bBhHiIlLqQefd"


def _numpy_globals() -> list:
    """The numpy reconstructors that numeric arrays and scalars need when unpickled.

    They rebuild an array or scalar of a numeric dtype from bytes and cannot run code: the
    dtype classes allowed are the numeric ones only (no object or structured dtypes). Training
    states written before anatomix stored plain types hold numpy's RNG state (a uint32 array)
    and sometimes numpy scalars in their metrics; these load safely through this list.
    Both module spellings are listed (numpy 2 ``numpy._core``, numpy 1 ``numpy.core``).
    """
    import numpy as np
    from numpy._core import multiarray

    found = [multiarray._reconstruct, multiarray.scalar]
    old = [(f, f"numpy.core.multiarray.{f.__name__}") for f in found]
    return [*found, *old, np.ndarray, np.dtype, *{type(np.dtype(c)) for c in _NUMERIC_DTYPES}]


def _one_line(e: BaseException) -> str:
    """The informative line of an exception message (torch's unpickler messages span many)."""
    text = str(e)
    for marker in ("WeightsUnpickler error: ", "Unsupported global: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(text.split(". ")[0].split()) or type(e).__name__


def _refusal(path: Path, e: BaseException) -> str:
    """The reason a file was refused: the globals it would import, else the unpickler's words."""
    import torch

    try:
        needs = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: fall back to the error itself
        needs = []
    what = f"it references {', '.join(needs[:4])}{' ...' if len(needs) > 4 else ''}" if needs else _one_line(e)
    return (f"refused: loading it needs a full unpickle, which runs code from the file ({what}); "
            f"only if you trust the file: --trust-checkpoint (Python: trust=True), or convert it once "
            f"with `anatomix convert-checkpoint --trust-checkpoint OLD NEW`")


def load_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """Read a ``.pt`` checkpoint: the one loader of every model, detector and training state.

    Without ``trust`` the file is read with ``torch.load(weights_only=True)``: tensors, plain
    containers, numbers and strings, plus numeric numpy arrays and scalars (see
    :func:`_numpy_globals`); a file that needs anything else is refused, nothing in it runs.

    Args:
        path: the checkpoint file.
        trust: read it with a full unpickle, which RUNS CODE FROM THE FILE. Only for files you
            trust; :func:`convert_checkpoint` turns such a file into one that needs no trust.

    Returns:
        The checkpoint's dict (tensors on the CPU).

    Raises:
        CheckpointError: missing, unreadable, not a dict, or refused (one line: path and reason).
    """
    import pickle

    import torch

    from anatomix.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        if trust:
            state = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _refusal(path, e) if not trust and "Weights only load failed" in str(e) else \
            f"not a readable checkpoint ({_one_line(e)})"
        raise CheckpointError(path, reason) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise CheckpointError(path, f"not a readable checkpoint ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"not an anatomix checkpoint (a {type(state).__name__}, not a dict)")
    return state


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` in the types that ``torch.load(weights_only=True)`` reads without an allow-list.

    numpy arrays become tensors (same dtype, numeric only), numpy scalars Python numbers,
    paths strings; dicts, lists and tuples are converted inside. Tensors, str, int, float,
    bool and None stay as they are.

    Raises:
        TypeError: something with no plain form (an arbitrary object); ``where`` names it.
    """
    import numpy as np
    import torch

    if isinstance(value, np.generic) and value.dtype.kind in "biuf":  # before float: np.float64 is one
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor, torch.Size)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        pairs = ((k, to_plain(v, f"{where}[{k!r}]")) for k, v in value.items())
        if not isinstance(value, OrderedDict):
            return dict(pairs)
        out = OrderedDict(pairs)
        if hasattr(value, "_metadata"):  # a state_dict's module versions (load_state_dict reads them)
            out._metadata = value._metadata
        return out
    if type(value) in (list, tuple):
        return type(value)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, "
                    f"which has no plain form")


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (converted by :func:`to_plain`) with ``torch.save`` through a temporary
    file, so that a killed run never leaves half a file and the file loads with
    ``weights_only=True``."""
    import torch

    from anatomix.io.atomic import atomic_write

    path = Path(path)
    plain = to_plain(payload)
    with atomic_write(path) as tmp:
        torch.save(plain, tmp)
    return path


def convert_checkpoint(src: str | Path, dst: str | Path, trust: bool = False) -> int:
    """Rewrite a checkpoint in plain types, so that it loads without trust from now on.

    Args:
        src: the old checkpoint (e.g. a training state that holds numpy objects).
        dst: where to write the converted one (may equal ``src``).
        trust: needed when ``src`` itself needs a full unpickle (RUNS CODE FROM THE FILE).

    Returns:
        The number of tensors written; each is checked ``torch.equal`` to the source after
        reading ``dst`` back without trust.

    Raises:
        CheckpointError: ``src`` is refused or unreadable, holds objects with no plain form, or
            the written file does not read back identical.
    """
    from anatomix.errors import CheckpointError

    state = load_checkpoint(src, trust=trust)
    try:
        save_checkpoint(dst, state)
    except TypeError as e:
        raise CheckpointError(src, f"cannot convert: {e}") from None
    before, after = _tensors(to_plain(state)), _tensors(load_checkpoint(dst))
    if before.keys() != after.keys() or any(not _same(before[k], after[k]) for k in before):
        raise CheckpointError(dst, "converted checkpoint does not read back identical")
    return len(after)


def _tensors(value: Any, where: str = "") -> dict:
    """{location: tensor} of every tensor inside nested dicts, lists and tuples."""
    import torch

    if isinstance(value, torch.Tensor):
        return {where: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {k: t for key, v in items for k, t in _tensors(v, f"{where}/{key}").items()}


def _same(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def model_identity(segmenter) -> tuple[str, str]:
    """(name, version) of a loaded segmenter: what a DICOM-SEG names as its algorithm and what an
    output folder records (``run.json``) so that a resume never mixes two models' results.

    Name: ``anatomix <model>`` (the registry name or checkpoint stem that
    :func:`load_segmenter` was given, else the model family). Version: the
    anatomix version and 12 hex digits of a SHA-256 over the checkpoint's SHA-256 (and those of
    a refined model's graph and pixel checkpoints) when the checkpoint is known
    (``0.1.0+w3f2a...``).
    """
    import hashlib

    from anatomix import __version__
    from anatomix.errors import AnatomixError

    source = getattr(segmenter, "model_name", None)
    name = getattr(segmenter, "family", None) or "model"
    version = __version__
    if source:
        name = source if source in REGISTRY else Path(source).name.removesuffix(".pt")
        # a refined model's file only names its graph and pixel models: their weights count too
        parts = [segmenter, *(getattr(segmenter, k, None) for k in ("graph", "pixel"))]
        try:
            digests = [hashlib.sha256(Path(resolve(p.model_name)).read_bytes()).hexdigest()
                       for p in parts if getattr(p, "model_name", None)]
            version = f"{__version__}+w{hashlib.sha256(''.join(digests).encode()).hexdigest()[:12]}"
        except (AnatomixError, OSError):
            pass
    runtime = getattr(segmenter, "runtime", None)
    if runtime:
        name = f"{name} ({runtime})"
    return f"anatomix {name}", version
