"""Dense (pixel) segmenters: MONAI UNet / FlexibleUNet and segmentation-models-pytorch
architectures, multi-label outputs per structure, mask post-processing, landmarks traced
from masks.

Public API (imported lazily so that ``import anatomix.pixel`` stays light)::

    from anatomix.pixel.models import build_pixel_model, pixel_model_names, PixelConfig
    from anatomix.pixel.postprocess import postprocess_masks, topological_error
    from anatomix.pixel.train import PixelTask
    from anatomix.pixel.inference import PixelSegmenter
"""
