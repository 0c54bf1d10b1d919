# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini ImageNet-1k in the layout of mmpretrain's ``ImageNet`` dataset with
annotation lists::

    root/
    ├── train/<wnid>/<wnid>_<n>.JPEG
    ├── val/ILSVRC2012_val_<n>.JPEG
    └── meta/train.txt   "<wnid>/<wnid>_<n>.JPEG <label>"
        meta/val.txt     "ILSVRC2012_val_<n>.JPEG <label>"

Labels are the index of the wnid in sorted order (the ImageNet-1k
convention); the images use the first ``num_classes`` of them. The lists are
required: without them ``ImageNet`` derives its classes from the folders and
rejects a folder count other than 1000.
"""
import os.path as osp
from typing import Dict, List

import numpy as np

from ._common import (SizeLike, as_wh, check_count, classification_image, makedirs,
                      save_rgb)

# The first ten ImageNet-1k wnids (sorted); further classes get synthetic ids.
_FIRST_WNIDS = ('n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475', 'n01496331',
                'n01498041', 'n01514668', 'n01514859', 'n01518878')


def imagenet_wnids(num_classes: int) -> List[str]:
    """Sorted wnids of the first ``num_classes`` classes (real ones for the
    first ten, then ``n9xxxxxxx`` placeholders that sort after them)."""
    wnids = list(_FIRST_WNIDS[:num_classes])
    wnids += [f'n9{i:07d}' for i in range(len(wnids), num_classes)]
    return wnids


def write_imagenet(root: str,
                   num_images: int = 4,
                   image_size: SizeLike = (80, 64),
                   num_classes: int = 4,
                   seed: int = 0,
                   *,
                   num_val_images: int = 4) -> Dict:
    """Writes a mini ImageNet-1k dataset.

    Args:
        root (str): ``data_root`` of an ImageNet config.
        num_images (int): Training images (class ``i % num_classes``).
            Defaults to 4.
        image_size (int | tuple[int, int]): ``(width, height)``.
            Defaults to ``(80, 64)``.
        num_classes (int): Classes used (at most 1000). Defaults to 4.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Validation images. Defaults to 4.

    Returns:
        dict: ``data_root``, ``splits`` (``'train'``: ``split='train'``,
        ``'val'``: ``split='val'``), ``wnids``.
    """
    width, height = as_wh(image_size)
    check_count(num_images, 'num_images')
    check_count(num_val_images, 'num_val_images')
    check_count(num_classes, 'num_classes')
    if num_classes > 1000:
        raise ValueError(f'num_classes must be <= 1000, got {num_classes}')
    rng = np.random.default_rng(seed)
    wnids = imagenet_wnids(num_classes)
    makedirs(osp.join(root, 'meta'))
    train_lines, val_lines = [], []
    for i in range(num_images):
        label = i % num_classes
        rel = f'{wnids[label]}/{wnids[label]}_{i + 1}.JPEG'
        save_rgb(classification_image(rng, label, width, height), osp.join(root, 'train', rel))
        train_lines.append(f'{rel} {label}\n')
    for i in range(num_val_images):
        label = int(rng.integers(0, num_classes))
        rel = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
        save_rgb(classification_image(rng, label, width, height), osp.join(root, 'val', rel))
        val_lines.append(f'{rel} {label}\n')
    for name, lines in (('train', train_lines), ('val', val_lines)):
        with open(osp.join(root, 'meta', f'{name}.txt'), 'w', encoding='utf-8') as f:
            f.writelines(lines)
    splits = dict(train=dict(split='train'), val=dict(split='val'))
    return dict(data_root=root, splits=splits, wnids=wnids)
