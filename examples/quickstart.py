"""A first tour of the Python API on the bundled example radiographs.

Run it with ``make demo`` (or ``.venv/bin/python examples/quickstart.py``). It reads every
example image, segments lungs and heart with the bundled graph model, measures node-wise
uncertainty, and writes masks, landmarks and overlays to ``out/quickstart``.
"""

from pathlib import Path

from anatomix.runtime import quiet_imports

quiet_imports()

from anatomix.io import (  # noqa: E402
    read_radiograph,
    write_landmarks_json,
    write_mask_png,
    write_overlay,
)
from anatomix.models import load_segmenter  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "out" / "quickstart"


def main() -> None:
    segmenter = load_segmenter("graph")  # the bundled HybridGNet (see anatomix/weights/*.md)
    for path in sorted((HERE / "images").glob("*.png")):
        radiograph = read_radiograph(path)  # float32 (H, W) in [0, 1], original frame
        seg = segmenter.predict_with_uncertainty(radiograph, n=20)
        for key, mask in seg.masks.items():  # (H, W) bool in the original frame
            write_mask_png(OUT / f"{seg.image_id}_{key}.png", mask)
        write_landmarks_json(OUT / f"{seg.image_id}_landmarks.json", seg.landmarks,
                             seg.template, image_shape=seg.shape)
        write_overlay(OUT / f"{seg.image_id}_overlay.png", radiograph.pixels,
                      contours=seg.template.split(seg.landmarks))
        areas = ", ".join(f"{k} {m.mean():.1%}" for k, m in seg.masks.items())
        print(f"{path.name}: {radiograph.shape[1]}x{radiograph.shape[0]} px; area {areas}; "
              f"mean node std {seg.node_std.mean():.2f} px")
    print(f"masks, landmarks and overlays in {OUT}")


if __name__ == "__main__":
    main()
