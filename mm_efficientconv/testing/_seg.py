# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Synthetic segmentation samples shared by the Cityscapes and VOC writers."""
from typing import Tuple

import numpy as np

from ._common import background, class_colour, fill_rect, random_box


def segmentation_sample(rng: np.random.Generator, width: int, height: int,
                        num_classes: int, background_label: int = 0,
                        num_objects: int = 3,
                        ignore_border: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """An ``(image, label)`` pair: the label map is ``background_label`` with
    up to ``num_objects`` rectangles of random classes; the image paints every
    labelled region in its class colour. With ``ignore_border > 0`` a band of
    that width around each rectangle is labelled 255 (VOC's "void" outline).

    Returns:
        tuple[np.ndarray, np.ndarray]: RGB uint8 (H, W, 3) image and uint8
        (H, W) label map.
    """
    label = np.full((height, width), background_label, dtype=np.uint8)
    img = background(rng, width, height)
    if background_label != 255:
        fill_rect(img, rng, (0, 0, width, height), class_colour(background_label))
    for _ in range(int(rng.integers(1, num_objects + 1))):
        cls = int(rng.integers(0, num_classes))
        x1, y1, x2, y2 = random_box(rng, width, height, 0.2, 0.5)
        if ignore_border:
            b = ignore_border
            label[max(0, y1 - b):y2 + b, max(0, x1 - b):x2 + b] = 255
        label[y1:y2, x1:x2] = cls
        fill_rect(img, rng, (x1, y1, x2, y2), class_colour(cls))
    return img, label
