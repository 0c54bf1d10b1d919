# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini fine-grained dataset (Stanford Dogs) as an mmpretrain
``CustomDataset`` folder tree, the layout the ``*_stanford-dogs.py`` configs
expect after splitting the official ``Images/`` folder with
``train_list.mat``/``test_list.mat``::

    root/
    ├── train/<class>/<image>.jpg
    ├── test/<class>/<image>.jpg
    └── meta/train.txt, meta/test.txt   "<class>/<image>.jpg <label>" (optional
                                         alternative to folder scanning)

Class folders are named like the official ones (``<wnid>-<breed>``); the label
of a class is its index in sorted folder order, which is how
``CustomDataset`` numbers folders.
"""
import os.path as osp
from typing import Dict, List

import numpy as np

from ._common import (SizeLike, as_wh, check_count, classification_image, makedirs,
                      save_rgb)

_DOG_BREEDS = ('n02085620-Chihuahua', 'n02085782-Japanese_spaniel', 'n02085936-Maltese_dog',
               'n02086079-Pekinese', 'n02086240-Shih-Tzu', 'n02086646-Blenheim_spaniel',
               'n02086910-papillon', 'n02087046-toy_terrier')


def dog_class_names(num_classes: int) -> List[str]:
    """Sorted class-folder names: the first official breed folders, then
    synthetic ``n9xxxxxxx-breed_<i>`` names."""
    names = list(_DOG_BREEDS[:num_classes])
    names += [f'n9{i:07d}-breed_{i}' for i in range(len(names), num_classes)]
    return names


def write_stanford_dogs(root: str,
                        num_images: int = 4,
                        image_size: SizeLike = (80, 64),
                        num_classes: int = 3,
                        seed: int = 0,
                        *,
                        num_val_images: int = 3) -> Dict:
    """Writes a mini Stanford Dogs dataset (also a generic image-folder
    fine-grained dataset).

    Every class folder gets at least one image in each split (``CustomDataset``
    numbers the folders it finds, so train and test must have the same ones).

    Args:
        root (str): ``data_root`` of the config (``data/stanford_dogs``).
        num_images (int): Training images, at least ``num_classes``.
            Defaults to 4.
        image_size (int | tuple[int, int]): ``(width, height)``.
            Defaults to ``(80, 64)``.
        num_classes (int): Class folders. Defaults to 3.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Test images, at least ``num_classes``.
            Defaults to 3.

    Returns:
        dict: ``data_root``; ``splits`` with ``'train'``
        (``data_prefix='train'``), ``'val'`` (``data_prefix='test'``) and the
        annotation-list variants ``'train_ann'``/``'val_ann'``; ``classes``.
    """
    width, height = as_wh(image_size)
    check_count(num_classes, 'num_classes')
    check_count(num_images, 'num_images', minimum=num_classes)
    check_count(num_val_images, 'num_val_images', minimum=num_classes)
    rng = np.random.default_rng(seed)
    classes = dog_class_names(num_classes)
    makedirs(osp.join(root, 'meta'))
    for split, count in (('train', num_images), ('test', num_val_images)):
        lines = []
        for i in range(count):
            label = i % num_classes
            rel = f'{classes[label]}/{classes[label].split("-")[0]}_{i:04d}.jpg'
            save_rgb(classification_image(rng, label, width, height), osp.join(root, split, rel))
            lines.append(f'{rel} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w', encoding='utf-8') as f:
            f.writelines(lines)
    splits = dict(
        train=dict(data_prefix='train', ann_file=''),
        val=dict(data_prefix='test', ann_file=''),
        train_ann=dict(data_prefix='train', ann_file='meta/train.txt'),
        val_ann=dict(data_prefix='test', ann_file='meta/test.txt'))
    return dict(data_root=root, splits=splits, classes=tuple(classes))
