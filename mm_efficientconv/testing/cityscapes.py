# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini Cityscapes (fine annotations) in the layout mmseg reads after its
``tools/dataset_converters/cityscapes.py`` step::

    root/
    ├── leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    └── gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
                                  (and ..._gtFine_labelIds.png, the raw ids)

``labelTrainIds`` holds the 19 train ids (0 to 18) and 255 for ignored pixels.
"""
import os.path as osp
from typing import Dict

import numpy as np

from ._common import SizeLike, as_wh, check_count, save_label_png, save_rgb
from ._seg import segmentation_sample

CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                      'traffic light', 'traffic sign', 'vegetation', 'terrain', 'sky',
                      'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
                      'bicycle')
# labelIds (the raw Cityscapes ids) of the 19 train ids, in train-id order.
TRAIN_ID_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32,
                        33)
_CITIES = dict(train=('aachen', 'bochum'), val=('frankfurt', 'lindau'))


def write_cityscapes(root: str,
                     num_images: int = 4,
                     image_size: SizeLike = (128, 64),
                     num_classes: int = 19,
                     seed: int = 0,
                     *,
                     num_val_images: int = 2) -> Dict:
    """Writes a mini Cityscapes dataset.

    Args:
        root (str): Dataset root (``data_root`` of a config).
        num_images (int): Training images. Defaults to 4.
        image_size (int | tuple[int, int]): ``(width, height)``; the real
            images are 2048x1024. Defaults to ``(128, 64)``.
        num_classes (int): Objects use train ids ``0 .. num_classes - 1``
            (at most 19). Defaults to 19.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Validation images. Defaults to 2.

    Returns:
        dict: ``data_root``, ``splits`` (``'train'``/``'val'`` dataset
        arguments: ``data_prefix`` with ``img_path`` and ``seg_map_path``) and
        ``classes``.
    """
    width, height = as_wh(image_size)
    check_count(num_images, 'num_images')
    check_count(num_val_images, 'num_val_images')
    check_count(num_classes, 'num_classes')
    if num_classes > len(CITYSCAPES_CLASSES):
        raise ValueError(f'num_classes must be <= {len(CITYSCAPES_CLASSES)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    to_label_id = np.zeros(256, dtype=np.uint8)  # 255 (ignore) -> 0 (unlabeled)
    to_label_id[:len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    splits = {}
    for split, count in (('train', num_images), ('val', num_val_images)):
        for i in range(count):
            city = _CITIES[split][i % len(_CITIES[split])]
            stem = f'{city}_{i:06d}_{19 + i:06d}'
            img, label = segmentation_sample(rng, width, height, num_classes,
                                             background_label=0)
            # a strip of ignored pixels at the bottom, like the ego-vehicle hood
            label[height - max(1, height // 16):] = 255
            save_rgb(img, osp.join(root, 'leftImg8bit', split, city, f'{stem}_leftImg8bit.png'))
            gt_dir = osp.join(root, 'gtFine', split, city)
            save_label_png(label, osp.join(gt_dir, f'{stem}_gtFine_labelTrainIds.png'))
            save_label_png(to_label_id[label], osp.join(gt_dir, f'{stem}_gtFine_labelIds.png'))
        splits[split] = dict(data_prefix=dict(img_path=f'leftImg8bit/{split}',
                                              seg_map_path=f'gtFine/{split}'))
    return dict(data_root=root, splits=splits, classes=CITYSCAPES_CLASSES)
