"""Reverse classification accuracy (RCA), as in CheXmask: a per-image Dice estimate without
ground truth.

For one query radiograph and its predicted masks:

1. pick the ``k`` references (labelled images) most similar to the query (global normalised
   cross-correlation of the registration-frame images; or any embedding you pass, e.g. the graph
   encoder's latent ``mu`` from :func:`latent_embeddings`);
2. register the query image to each reference, all ``k`` at once as one batch: an affine stage
   (MONAI :class:`~monai.networks.layers.AffineTransform`, global NCC, then local NCC) followed by a
   deformable stage (a coarse displacement grid upsampled and applied with MONAI
   :class:`~monai.networks.blocks.Warp`, LNCC + :class:`~monai.losses.BendingEnergyLoss`); the
   deformable result is kept for a reference only where it raises the local similarity (the
   local NCC is a box filter of the moving image's statistics, the references' computed once);
3. carry the predicted masks onto each reference with the same transform and compare them with
   the reference's own masks: the mean Dice over structures gives one figure per reference;
4. ``Dice RCA (Max)`` is the best of the ``k`` figures (CheXmask's estimate), ``Dice RCA (Mean)``
   their mean.

Everything runs in a small square frame (``REGISTRATION_SIZE`` = 128 pixels by default); the
similarity is optimised on a 4x downsampled copy (32 px) and the transforms are applied to the
masks at 128 px (:class:`RegistrationSettings`, :data:`DEFAULT_REGISTRATION`). Cost on one CPU
thread: about 0.1 s per image with ``k = 4`` references (``bench/qc_speed.py``; about 0.4-0.6 s
with the settings before, :data:`LEGACY_REGISTRATION`).

References come from :func:`load_references`: by default the bundled derived atlases
(``anatomix/weights/qc_atlases.npz``: cluster-mean images with their mean-shape masks, built from
training cases only by :mod:`anatomix.qc.atlases`), or any labelled folder
(``<id>.png`` + ``<id>_lungR.png``, ``<id>_lungL.png``, ``<id>_heart.png``), or an ``.npz`` of the
same layout as the bundled file; :func:`references_from_cases` makes them of any labelled cases.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from anatomix.anatomy import STRUCTURE_KEYS

REGISTRATION_SIZE = 128
"""Side of the square frame in which references are stored and registration runs."""


@dataclass
class References:
    """Labelled reference images for RCA, in the square registration frame.

    Attributes:
        images: (K, S, S) float32 in [0, 1] (robustly normalised like model inputs).
        masks: (K, len(keys), S, S) float32 in [0, 1] (thresholded at 0.5 for Dice).
        ids: K names.
        keys: structure keys of the mask channels.
        meta: free-form provenance and calibration (e.g. ``similarity_threshold``).
        embeddings: optional (K, D) vectors for nearest-neighbour selection.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: List[str]
    keys: Sequence[str] = STRUCTURE_KEYS
    meta: Dict[str, object] = field(default_factory=dict)
    embeddings: Optional[np.ndarray] = None

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: Path | str) -> None:
        """Write as ``.npz`` (images and masks as uint8, meta as JSON)."""
        import json

        np.savez_compressed(
            path, images=np.round(self.images * 255).astype(np.uint8),
            masks=np.round(self.masks * 255).astype(np.uint8), ids=np.array(self.ids),
            keys=np.array(list(self.keys)), meta=json.dumps(self.meta))

    @classmethod
    def load_npz(cls, path: Path | str) -> "References":
        import json

        z = np.load(path, allow_pickle=False)
        return cls(z["images"].astype(np.float32) / 255.0, z["masks"].astype(np.float32) / 255.0,
                   [str(i) for i in z["ids"]], tuple(str(k) for k in z["keys"]),
                   json.loads(str(z["meta"])))


def prepare_image(pixels: np.ndarray, size: int = REGISTRATION_SIZE):
    """Original-frame (H, W) image -> ((size, size) normalised float32, its SquareFrame)."""
    from anatomix.data.preprocess import to_model_frame

    return to_model_frame(np.asarray(pixels, np.float32), size)


def prepare_masks(masks: Mapping[str, np.ndarray], frame, keys: Sequence[str]) -> np.ndarray:
    """{key: (H, W) bool} in the original frame -> (len(keys), S, S) float32 (missing keys are NaN)."""
    out = np.full((len(keys), frame.size, frame.size), np.nan, np.float32)
    for i, k in enumerate(keys):
        if k in masks:
            out[i] = np.clip(frame.image_to_model(np.asarray(masks[k], np.float32)), 0, 1)
    return out


_CACHE: Dict[str, References] = {}


def load_references(path: Optional[Path | str] = None, size: int = REGISTRATION_SIZE) -> References:
    """RCA references: the bundled atlases (``None``), an ``.npz`` file, or a labelled folder.

    A folder holds images with ``<stem>_lungR.png``, ``<stem>_lungL.png`` and ``<stem>_heart.png``
    masks next to them (the layout of :func:`anatomix.data.cases.folder_cases`); images without
    all three masks are skipped. Results are cached per path.

    Raises:
        anatomix.errors.AnatomixError: if there is no bundled file, or the folder has no
            fully labelled image.
    """
    from anatomix.errors import AnatomixError

    key = str(path)
    if key in _CACHE:
        return _CACHE[key]
    if path is None:
        from anatomix.models import WEIGHTS_DIR

        p = WEIGHTS_DIR / "qc_atlases.npz"
        if not p.is_file():
            raise AnatomixError(f"bundled QC atlases missing: {p}")
        refs = References.load_npz(p)
    else:
        p = Path(path)
        if p.is_file() and p.suffix == ".npz":
            refs = References.load_npz(p)
        elif p.is_dir():
            refs = _folder_references(p, size)
        else:
            raise AnatomixError(f"reference set {p} is neither a folder nor an .npz file")
    _CACHE[key] = refs
    return refs


def _folder_references(folder: Path, size: int) -> References:
    from anatomix.data.cases import folder_cases

    return references_from_cases(folder_cases(folder), size, str(folder))


def references_from_cases(cases: Sequence, size: int = REGISTRATION_SIZE, source: str = "cases") -> References:
    """RCA references made of labelled cases themselves (their real images and masks).

    Args:
        cases: labelled cases (:class:`anatomix.data.cases.SegCase`: ``image``, ``masks``,
            ``case_id``); cases without all of ``lungR``, ``lungL``, ``heart`` are skipped.
        size: side of the registration frame.
        source: where the cases come from, kept in ``meta["source"]`` and named by the error.

    Raises:
        anatomix.errors.AnatomixError: no case is fully labelled.
    """
    from anatomix.errors import AnatomixError
    from anatomix.io.read import read_mask, read_radiograph

    images, masks, ids = [], [], []
    for case in cases:
        if not all(k in case.masks for k in STRUCTURE_KEYS):
            continue
        pixels = read_radiograph(case.image).pixels
        img, frame = prepare_image(pixels, size)
        m = {k: read_mask(case.masks[k]) for k in STRUCTURE_KEYS}
        images.append(img)
        masks.append(prepare_masks(m, frame, STRUCTURE_KEYS))
        ids.append(case.case_id)
    if not ids:
        raise AnatomixError(f"no labelled reference (image + {', '.join(STRUCTURE_KEYS)} masks) in {source}")
    return References(np.stack(images), np.stack(masks), ids, STRUCTURE_KEYS, {"source": source})


# -- registration ---------------------------------------------------------------------------------
def _ncc(a, b):
    """Global normalised cross-correlation per batch item of (B, 1, H, W) tensors."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)


@dataclass
class RegistrationResult:
    """Query masks carried onto each reference.

    Attributes:
        warped_masks: (k, C, S, S) float in [0, 1].
        similarity: (k,) global NCC between the registered query and each reference.
        deformable: (k,) bool, whether the deformable stage was kept.
    """

    warped_masks: np.ndarray
    similarity: np.ndarray
    deformable: np.ndarray


_THREADS_LOCK = threading.Lock()
_THREADS_USERS = [0, 0]  # [callers inside, saved thread count]


@contextmanager
def _one_thread():
    """Run torch on one intra-op thread while inside (restored when the last caller leaves).

    The registration works on a few 32 x 32 images: more threads only add overhead, and on a busy
    machine they make it many times slower."""
    import torch

    with _THREADS_LOCK:
        if _THREADS_USERS[0] == 0:
            _THREADS_USERS[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_USERS[0] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS[0] -= 1
            if _THREADS_USERS[0] == 0:
                torch.set_num_threads(_THREADS_USERS[1])


@dataclass(frozen=True)
class RegistrationSettings:
    """How :func:`register_batch` registers (the frame itself is the references' ``size``).

    Attributes:
        scale: the similarity is optimised on images downsampled by this factor (4: 32 px in the
            128-px frame); the transforms found are applied to the masks at full resolution.
        affine_iters: Adam steps of the affine stage (global NCC).
        fine_iters: Adam steps refining the affine with local NCC.
        deform_iters: Adam steps of the deformable stage (0 skips it).
        deform_grid: side of the coarse displacement grid (upsampled to the image).
        lncc_kernel: side of the local-NCC window, pixels of the optimisation frame.
        bending_weight: weight of the bending energy of the displacement field.
        lncc: ``"box"`` (one box filter of the moving statistics, the reference's precomputed)
            or ``"monai"`` (:class:`~monai.losses.LocalNormalizedCrossCorrelationLoss`, the
            same figure to float error; slower).
    """

    scale: int = 4
    affine_iters: int = 40
    fine_iters: int = 15
    deform_iters: int = 20
    deform_grid: int = 12
    lncc_kernel: int = 5
    bending_weight: float = 1.0
    lncc: str = "box"

    def describe(self, size: int = REGISTRATION_SIZE) -> str:
        """One line for tables: frame, optimisation resolution, steps."""
        return (f"{size} px frame, optimised at {size // self.scale} px, {self.affine_iters}+{self.fine_iters}"
                f"+{self.deform_iters} steps (affine+fine+deformable), LNCC window {self.lncc_kernel} ({self.lncc})")


DEFAULT_REGISTRATION = RegistrationSettings()
"""RCA's registration: optimised at 32 px, 40 + 15 + 20 steps (0.08-0.1 s per film with k = 4 on one
CPU thread; see ``bench/qc_speed.py``). The bundled predicted-Dice model is fitted on its figures."""

LEGACY_REGISTRATION = RegistrationSettings(scale=2, affine_iters=60, fine_iters=20, deform_iters=30,
                                           lncc_kernel=7, lncc="monai")
"""The registration of RCA before issue 16's item 4 (optimised at 64 px, 60 + 20 + 30 steps, MONAI
LNCC; about 4x the cost): kept for ``bench/qc_speed.py``'s baseline."""


def register_batch(moving: np.ndarray, moving_masks: np.ndarray, fixed: np.ndarray,
                   settings: RegistrationSettings = DEFAULT_REGISTRATION,
                   deformable: bool = True) -> RegistrationResult:
    """Register one moving image to ``k`` fixed images at once (one batched optimisation) and
    carry its masks along.

    The similarity is optimised at ``S / settings.scale``; the transforms found are then applied
    to the masks at full resolution S.

    Args:
        moving: (S, S) query image.
        moving_masks: (C, S, S) query masks (soft, in [0, 1]).
        fixed: (k, S, S) reference images.
        settings: :class:`RegistrationSettings` (default :data:`DEFAULT_REGISTRATION`).
        deformable: run the deformable stage (False: affine only).

    Returns:
        :class:`RegistrationResult`.
    """
    with _one_thread(), warnings.catch_warnings():
        # MONAI's Warp notes that it uses torch's grid_sample, its bending energy indexes tensors
        # with lists (deprecated in torch 2.9): both harmless here
        warnings.filterwarnings("ignore", message=r".*grid_sample.*")
        warnings.filterwarnings("ignore", message=r".*non-tuple sequence for multidimensional indexing.*")
        return _register_batch(moving, moving_masks, fixed, settings, deformable)


def _box_local_similarity(fix, kernel: int):
    """``sim(x) -> (k,)``: mean squared local NCC of (k, 1, h, h) ``x`` with ``fix`` in a
    ``kernel``-square window with zero padding: the figure of MONAI's rectangular-kernel
    :class:`~monai.losses.LocalNormalizedCrossCorrelationLoss` (negated), with the reference's
    window sums computed once and the moving image's three in one pooling call."""
    import torch
    import torch.nn.functional as F

    n = float(kernel * kernel)

    def box(x):
        return F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=True) * n

    t_sum, t2_sum = box(fix), box(fix * fix)
    t_var = torch.clamp(t2_sum - t_sum / n * t_sum, min=1e-5)

    def sim(p):
        sums = box(torch.cat([p, p * p, p * fix], 1))
        p_sum, p2_sum, tp_sum = sums[:, :1], sums[:, 1:2], sums[:, 2:]
        p_avg = p_sum / n
        cross = tp_sum - p_avg * t_sum
        p_var = torch.clamp(p2_sum - p_avg * p_sum, min=1e-5)
        return (cross * cross / (t_var * p_var)).flatten(1).mean(1)

    return sim


def _register_batch(moving, moving_masks, fixed, settings: RegistrationSettings, deformable) -> RegistrationResult:
    import torch
    import torch.nn.functional as F
    from monai.losses import BendingEnergyLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import Warp
    from monai.networks.layers import AffineTransform

    st = settings
    k, s = fixed.shape[0], fixed.shape[-1]
    h = s // st.scale
    fix_full = torch.from_numpy(np.ascontiguousarray(fixed, np.float32))[:, None]
    mov_full = torch.from_numpy(np.ascontiguousarray(moving, np.float32))[None, None].expand(k, 1, s, s)
    mm = torch.from_numpy(np.nan_to_num(np.ascontiguousarray(moving_masks, np.float32)))[None].expand(k, -1, s, s)
    fix = F.avg_pool2d(fix_full, st.scale)
    mov = F.avg_pool2d(mov_full, st.scale)
    # images are resampled with border padding (zero padding lets the optimiser shrink the
    # image away from its own empty margin), masks with zero padding
    affine = AffineTransform(normalized=True, align_corners=False, padding_mode="border")
    affine_mask = AffineTransform(normalized=True, align_corners=False, padding_mode="zeros")
    ident = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(k, 2, 3)
    delta = torch.zeros(k, 2, 3, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=0.02)
    for _ in range(st.affine_iters):
        opt.zero_grad()
        loss = (1 - _ncc(affine(mov, ident + delta), fix)).sum()
        loss.backward()
        opt.step()
    if st.lncc == "box":
        local_sim = _box_local_similarity(fix, st.lncc_kernel)
    else:
        lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=st.lncc_kernel, reduction="none")

        def local_sim(x):  # (k,) mean local NCC (higher is better)
            return -lncc(x, fix).flatten(1).mean(1)

    opt = torch.optim.Adam([delta], lr=0.005)
    for _ in range(st.fine_iters):
        opt.zero_grad()
        loss = -local_sim(affine(mov, ident + delta)).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        theta = ident + delta
        warped_a = affine(mov, theta)
        sim_a = local_sim(warped_a)
        masks = affine_mask(mm, theta)
    use_def = torch.zeros(k, dtype=torch.bool)
    warped = warped_a
    if deformable and st.deform_iters > 0:
        warp = Warp(mode="bilinear", padding_mode="border")
        warp_mask = Warp(mode="bilinear", padding_mode="zeros")
        bending = BendingEnergyLoss(normalize=True, reduction="none")
        coarse = torch.zeros(k, 2, st.deform_grid, st.deform_grid, requires_grad=True)
        opt = torch.optim.Adam([coarse], lr=0.3)
        for _ in range(st.deform_iters):
            opt.zero_grad()
            ddf = F.interpolate(coarse, size=(h, h), mode="bilinear", align_corners=True)
            loss = (-local_sim(warp(warped_a, ddf))
                    + st.bending_weight * bending(ddf).flatten(1).mean(1)).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ddf = F.interpolate(coarse, size=(h, h), mode="bilinear", align_corners=True)
            warped_d = warp(warped_a, ddf)
            sim_d = local_sim(warped_d)
            use_def = sim_d > sim_a + 0.005
            if use_def.any():
                ddf_full = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=True) * (s / h)
                sel = use_def[:, None, None, None]
                warped = torch.where(sel, warped_d, warped_a)
                masks = torch.where(sel, warp_mask(masks, ddf_full), masks)
    with torch.no_grad():
        similarity = _ncc(warped, fix)
    return RegistrationResult(masks.numpy(), similarity.numpy(), use_def.numpy())


def select_references(query: np.ndarray, refs: References, k: int,
                      query_embedding: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the ``k`` references nearest the query: by embedding (Euclidean) when both the
    query and the references have one, else by global NCC of the registration-frame images."""
    k = min(k, len(refs))
    if query_embedding is not None and refs.embeddings is not None:
        d = np.linalg.norm(refs.embeddings - np.asarray(query_embedding)[None], axis=1)
        return np.argsort(d)[:k]
    q = query.ravel() - query.mean()
    r = refs.images.reshape(len(refs), -1)
    r = r - r.mean(axis=1, keepdims=True)
    ncc = (r @ q) / (np.linalg.norm(r, axis=1) * np.linalg.norm(q) + 1e-6)
    return np.argsort(-ncc)[:k]


def latent_embeddings(segmenter, images: Sequence[np.ndarray]) -> np.ndarray:
    """The graph encoder's posterior mean ``mu`` of each image, for latent-space k-NN.

    Args:
        segmenter: a :class:`anatomix.graphs.inference.GraphSegmenter`.
        images: (H, W) images in [0, 1] (original frames, or the references' registration-frame
            images: ``refs.images``).

    Returns:
        (len(images), latent_dim) float32. Store the references' rows in ``References.embeddings``
        and pass the query's row as ``query_embedding`` to :func:`rca` / :func:`anatomix.qc.assess`.
    """
    import torch

    from anatomix.data.preprocess import to_model_frame

    x = np.stack([to_model_frame(np.asarray(im, np.float32), segmenter.size)[0] for im in images])
    with torch.no_grad():
        mu = segmenter.model.encoder(torch.from_numpy(x)[:, None].to(segmenter.device))[0]
    return mu.cpu().numpy().astype(np.float32)


def reference_dice(pixels: np.ndarray, mask_sets: Sequence[Mapping[str, np.ndarray]],
                   refs: Optional[References] = None, k: int = 4, deformable: bool = True,
                   query_embedding: Optional[np.ndarray] = None, seed: int = 0,
                   registration: RegistrationSettings = DEFAULT_REGISTRATION):
    """Register the image once to its ``k`` nearest references and carry every mask set along.

    Args:
        pixels: (H, W) original-frame image.
        mask_sets: mask sets of this image, each {structure key: (H, W) bool}.
        refs, k, deformable, query_embedding, seed, registration: as in :func:`rca`.

    Returns:
        (idx (k,) reference indices, similarity (k,) global NCC after registration,
        dice (len(mask_sets), k, len(refs.keys)) per-structure Dice with each reference's mask;
        NaN for a structure missing from a mask set).
    """
    import torch

    refs = load_references() if refs is None else refs
    torch.manual_seed(seed)
    img, frame = prepare_image(pixels, refs.size)
    qm = np.concatenate([prepare_masks(m, frame, refs.keys) for m in mask_sets])  # (n * C, S, S)
    idx = select_references(img, refs, k, query_embedding)
    res = register_batch(img, qm, refs.images[idx], registration, deformable=deformable)
    c = len(refs.keys)
    a = res.warped_masks.reshape(len(idx), len(mask_sets), c, refs.size, refs.size) >= 0.5
    b = refs.masks[idx][:, None] >= 0.5
    inter = (a & b).sum(axis=(-1, -2))
    den = a.sum(axis=(-1, -2)) + b.sum(axis=(-1, -2))
    d = np.where(den == 0, 1.0, 2.0 * inter / np.maximum(den, 1))
    missing = np.isnan(qm).all(axis=(1, 2)).reshape(len(mask_sets), c)
    d = np.where(missing[None], np.nan, d).transpose(1, 0, 2)
    return idx, res.similarity, d


def rca(pixels: np.ndarray, masks: Mapping[str, np.ndarray], refs: Optional[References] = None,
        k: int = 4, deformable: bool = True, query_embedding: Optional[np.ndarray] = None,
        seed: int = 0, registration: RegistrationSettings = DEFAULT_REGISTRATION) -> Dict[str, object]:
    """RCA figures of one image.

    Args:
        pixels: (H, W) original-frame image.
        masks: {structure key: (H, W) bool} predicted masks in the same frame.
        refs: references (default: :func:`load_references` ``()``).
        k: number of references registered.
        deformable: run the deformable stage.
        query_embedding: optional vector to pick references by (see :func:`select_references`).
        seed: torch seed (the optimisation itself is deterministic; kept for reproducibility).
        registration: :class:`RegistrationSettings` (the bundled predicted-Dice model is fitted
            on :data:`DEFAULT_REGISTRATION`'s figures).

    Returns:
        ``{"Dice RCA (Max)", "Dice RCA (Mean)", "rca_similarity" (best global NCC after
        registration), "rca_references" (ids joined by ``|``), "per_reference" (list of Dice),
        "per_structure" ({key: mean Dice over the references})}``.
        Structures missing from ``masks`` are left out of the Dice; with none in common the
        Dice figures are NaN.
    """
    refs = load_references() if refs is None else refs
    idx, similarity, d = reference_dice(pixels, [masks], refs, k, deformable, query_embedding, seed, registration)
    d = d[0]  # (k, C)
    present = np.isfinite(d).all(axis=0)
    dices_a = d[:, present].mean(axis=1) if present.any() else np.full(len(idx), np.nan)
    ok = np.isfinite(dices_a)
    return {
        "Dice RCA (Max)": float(dices_a[ok].max()) if ok.any() else float("nan"),
        "Dice RCA (Mean)": float(dices_a[ok].mean()) if ok.any() else float("nan"),
        "rca_similarity": float(similarity.max()),
        "rca_references": "|".join(refs.ids[i] for i in idx),
        "per_reference": [float(v) for v in dices_a],
        "per_structure": {key: float(d[:, c].mean()) for c, key in enumerate(refs.keys) if present[c]},
    }
