# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini COCO detection dataset in the real on-disk layout::

    root/
    ├── annotations/instances_train2017.json
    ├── annotations/instances_val2017.json
    ├── train2017/000000000001.jpg ...
    └── val2017/000000100001.jpg ...

The json files hold ``images``, ``annotations`` (``bbox`` as ``[x, y, w, h]``,
``area``, ``iscrowd``, a rectangle polygon as ``segmentation``) and all 80
``categories`` with their official ids, so mmdet's ``CocoDataset`` (which maps
its class names to category ids) and ``CocoMetric`` read them unchanged. Each
object is a flat rectangle in its class colour, drawn exactly at its box.
"""
import json
import os.path as osp
from typing import Dict, Tuple

import numpy as np

from ._common import (SizeLike, as_wh, background, check_count, class_colour, fill_rect,
                      makedirs, random_box, save_rgb)

# (id, name, supercategory) of the 80 COCO 2017 detection categories.
COCO_CATEGORIES: Tuple[Tuple[int, str, str], ...] = (
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'), (3, 'car', 'vehicle'),
    (4, 'motorcycle', 'vehicle'), (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'),
    (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'), (9, 'boat', 'vehicle'),
    (10, 'traffic light', 'outdoor'), (11, 'fire hydrant', 'outdoor'),
    (13, 'stop sign', 'outdoor'), (14, 'parking meter', 'outdoor'), (15, 'bench', 'outdoor'),
    (16, 'bird', 'animal'), (17, 'cat', 'animal'), (18, 'dog', 'animal'),
    (19, 'horse', 'animal'), (20, 'sheep', 'animal'), (21, 'cow', 'animal'),
    (22, 'elephant', 'animal'), (23, 'bear', 'animal'), (24, 'zebra', 'animal'),
    (25, 'giraffe', 'animal'), (27, 'backpack', 'accessory'), (28, 'umbrella', 'accessory'),
    (31, 'handbag', 'accessory'), (32, 'tie', 'accessory'), (33, 'suitcase', 'accessory'),
    (34, 'frisbee', 'sports'), (35, 'skis', 'sports'), (36, 'snowboard', 'sports'),
    (37, 'sports ball', 'sports'), (38, 'kite', 'sports'), (39, 'baseball bat', 'sports'),
    (40, 'baseball glove', 'sports'), (41, 'skateboard', 'sports'),
    (42, 'surfboard', 'sports'), (43, 'tennis racket', 'sports'), (44, 'bottle', 'kitchen'),
    (46, 'wine glass', 'kitchen'), (47, 'cup', 'kitchen'), (48, 'fork', 'kitchen'),
    (49, 'knife', 'kitchen'), (50, 'spoon', 'kitchen'), (51, 'bowl', 'kitchen'),
    (52, 'banana', 'food'), (53, 'apple', 'food'), (54, 'sandwich', 'food'),
    (55, 'orange', 'food'), (56, 'broccoli', 'food'), (57, 'carrot', 'food'),
    (58, 'hot dog', 'food'), (59, 'pizza', 'food'), (60, 'donut', 'food'), (61, 'cake', 'food'),
    (62, 'chair', 'furniture'), (63, 'couch', 'furniture'), (64, 'potted plant', 'furniture'),
    (65, 'bed', 'furniture'), (67, 'dining table', 'furniture'), (70, 'toilet', 'furniture'),
    (72, 'tv', 'electronic'), (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'),
    (75, 'remote', 'electronic'), (76, 'keyboard', 'electronic'),
    (77, 'cell phone', 'electronic'), (78, 'microwave', 'appliance'),
    (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'), (81, 'sink', 'appliance'),
    (82, 'refrigerator', 'appliance'), (84, 'book', 'indoor'), (85, 'clock', 'indoor'),
    (86, 'vase', 'indoor'), (87, 'scissors', 'indoor'), (88, 'teddy bear', 'indoor'),
    (89, 'hair drier', 'indoor'), (90, 'toothbrush', 'indoor'))

COCO_CLASSES: Tuple[str, ...] = tuple(name for _, name, _ in COCO_CATEGORIES)


def _write_split(root: str, split: str, num_images: int, width: int, height: int,
                 num_classes: int, max_objects: int, first_image_id: int,
                 rng: np.random.Generator) -> str:
    images, annotations = [], []
    ann_id = first_image_id * 100
    for i in range(num_images):
        image_id = first_image_id + i
        file_name = f'{image_id:012d}.jpg'
        img = background(rng, width, height)
        num_objects = int(rng.integers(1, max_objects + 1))
        for _ in range(num_objects):
            label = int(rng.integers(0, num_classes))
            x1, y1, x2, y2 = random_box(rng, width, height, 0.25, 0.6)
            fill_rect(img, rng, (x1, y1, x2, y2), class_colour(label))
            w, h = x2 - x1, y2 - y1
            ann_id += 1
            annotations.append(
                dict(id=ann_id, image_id=image_id, category_id=COCO_CATEGORIES[label][0],
                     bbox=[float(x1), float(y1), float(w), float(h)], area=float(w * h),
                     iscrowd=0,
                     segmentation=[[float(x1), float(y1), float(x2), float(y1), float(x2),
                                    float(y2), float(x1), float(y2)]]))
        save_rgb(img, osp.join(root, f'{split}2017', file_name))
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
    coco = dict(
        info=dict(description=f'mm_efficientconv synthetic COCO {split}2017', version='1.0',
                  year=2017),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=cid, name=name, supercategory=sup)
                    for cid, name, sup in COCO_CATEGORIES])
    ann_file = osp.join('annotations', f'instances_{split}2017.json')
    makedirs(osp.join(root, 'annotations'))
    with open(osp.join(root, ann_file), 'w', encoding='utf-8') as f:
        json.dump(coco, f)
    return ann_file


def write_coco(root: str,
               num_images: int = 4,
               image_size: SizeLike = (128, 96),
               num_classes: int = 3,
               seed: int = 0,
               *,
               num_val_images: int = 2,
               max_objects: int = 3) -> Dict:
    """Writes a mini COCO 2017 detection dataset.

    Args:
        root (str): Dataset root (created if missing), the ``data_root`` of a
            config.
        num_images (int): Training images. Defaults to 4.
        image_size (int | tuple[int, int]): ``(width, height)`` of every image.
            Defaults to ``(128, 96)``.
        num_classes (int): Objects use the first ``num_classes`` COCO
            categories (1 to 80); the json always lists all 80. Defaults to 3.
        seed (int): Seed of the pixel and box generator. Defaults to 0.
        num_val_images (int): Validation images. Defaults to 2.
        max_objects (int): Up to this many objects per image (at least one).
            Defaults to 3.

    Returns:
        dict: ``data_root``; ``splits`` mapping ``'train'`` and ``'val'`` to the
        dataset arguments (``ann_file``, ``data_prefix``) relative to
        ``data_root``; ``ann_files`` mapping the splits to absolute json paths
        (for ``CocoMetric.ann_file``); ``classes`` (the 80 class names).
    """
    width, height = as_wh(image_size)
    check_count(num_images, 'num_images')
    check_count(num_val_images, 'num_val_images')
    check_count(max_objects, 'max_objects')
    check_count(num_classes, 'num_classes')
    if num_classes > len(COCO_CATEGORIES):
        raise ValueError(f'num_classes must be <= {len(COCO_CATEGORIES)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    splits, ann_files = {}, {}
    for split, count, first_id in (('train', num_images, 1), ('val', num_val_images, 100001)):
        ann_file = _write_split(root, split, count, width, height, num_classes, max_objects,
                                first_id, rng)
        splits[split] = dict(ann_file=ann_file, data_prefix=dict(img=f'{split}2017/'))
        ann_files[split] = osp.join(root, ann_file)
    return dict(data_root=root, splits=splits, ann_files=ann_files, classes=COCO_CLASSES)
