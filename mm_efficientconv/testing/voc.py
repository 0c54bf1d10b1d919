# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini PASCAL VOC 2012 segmentation with the SBD augmentation, in the layout
of mmseg's ``voc12aug`` configs (after ``tools/dataset_converters/voc_aug.py``)::

    root/                               (data/VOCdevkit/VOC2012)
    ├── JPEGImages/<id>.jpg
    ├── SegmentationClass/<id>.png      indexed-colour PNG (VOC palette); the
    │                                   pixel values are class ids, 255 = void
    ├── SegmentationClassAug/<id>.png   greyscale PNG of class ids
    └── ImageSets/Segmentation/{train,val,trainval,aug}.txt

``aug.txt`` lists the training ids plus the extra "SBD" ids (never the
validation ids), as the converter does.
"""
import os.path as osp
from typing import Dict

import numpy as np

from ._common import SizeLike, as_wh, check_count, makedirs, save_label_png, save_rgb
from ._seg import segmentation_sample

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


def voc_palette(num: int = 256):
    """The standard VOC colour map (bit-interleaved label index)."""
    palette = []
    for label in range(num):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


def _write_list(root: str, name: str, ids) -> str:
    rel = osp.join('ImageSets', 'Segmentation', f'{name}.txt')
    makedirs(osp.join(root, 'ImageSets', 'Segmentation'))
    with open(osp.join(root, rel), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{i}\n' for i in ids))
    return rel


def write_voc12aug(root: str,
                   num_images: int = 4,
                   image_size: SizeLike = (96, 72),
                   num_classes: int = 21,
                   seed: int = 0,
                   *,
                   num_val_images: int = 2,
                   num_aug_images: int = 2) -> Dict:
    """Writes a mini VOC2012 + SBD augmented segmentation dataset.

    Args:
        root (str): Dataset root (``data/VOCdevkit/VOC2012`` in the configs).
        num_images (int): Images of the VOC ``train`` split. Defaults to 4.
        image_size (int | tuple[int, int]): ``(width, height)``.
            Defaults to ``(96, 72)``.
        num_classes (int): Class ids ``0 .. num_classes - 1`` (0 is
            background; at most 21). Defaults to 21.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Images of the ``val`` split. Defaults to 2.
        num_aug_images (int): Extra SBD-only images in ``aug.txt``.
            Defaults to 2.

    Returns:
        dict: ``data_root``, ``splits`` with the dataset arguments
        (``ann_file``, ``data_prefix`` with ``img_path``/``seg_map_path``) of
        ``'train'``, ``'aug'`` and ``'val'``, and ``classes``.
    """
    width, height = as_wh(image_size)
    check_count(num_images, 'num_images')
    check_count(num_val_images, 'num_val_images')
    check_count(num_aug_images, 'num_aug_images', minimum=0)
    check_count(num_classes, 'num_classes', minimum=2)
    if num_classes > len(VOC_CLASSES):
        raise ValueError(f'num_classes must be <= {len(VOC_CLASSES)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    train_ids = [f'2007_{i:06d}' for i in range(num_images)]
    val_ids = [f'2008_{i:06d}' for i in range(num_val_images)]
    sbd_ids = [f'2009_{i:06d}' for i in range(num_aug_images)]
    for group in (train_ids, val_ids, sbd_ids):
        for img_id in group:
            img, label = segmentation_sample(rng, width, height, num_classes,
                                             background_label=0, ignore_border=1)
            save_rgb(img, osp.join(root, 'JPEGImages', f'{img_id}.jpg'))
            if group is not sbd_ids:  # SBD-only images have no VOC mask
                save_label_png(label, osp.join(root, 'SegmentationClass', f'{img_id}.png'),
                               palette=palette)
            if group is not val_ids:
                # the converter's SBD masks carry no void outline
                aug = label.copy()
                aug[aug == 255] = 0
                save_label_png(aug, osp.join(root, 'SegmentationClassAug', f'{img_id}.png'))
    train_txt = _write_list(root, 'train', train_ids)
    val_txt = _write_list(root, 'val', val_ids)
    _write_list(root, 'trainval', train_ids + val_ids)
    aug_txt = _write_list(root, 'aug', train_ids + sbd_ids)
    splits = dict(
        train=dict(ann_file=train_txt,
                   data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')),
        aug=dict(ann_file=aug_txt,
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug')),
        val=dict(ann_file=val_txt,
                 data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')))
    return dict(data_root=root, splits=splits, classes=VOC_CLASSES)
