# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""scikit-learn's handwritten digits as an mmpretrain classification dataset.

The 1,797 8x8 grey images ship inside scikit-learn, so the demo and the tests
train on real data without downloading anything.
"""
from typing import List, Optional

import numpy as np
from mmengine.registry import DATASETS
from mmpretrain.datasets import BaseDataset


def _load_digits_split(split: str, image_size: int, test_fraction: float, seed: int):
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # values 0..16
    labels = digits.target.astype(np.int64)
    # stratified, seeded hold-out split
    rng = np.random.RandomState(seed)
    test_index = []
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        test_index.extend(idx[:int(round(len(idx) * test_fraction))].tolist())
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    keep = is_test if split == 'test' else ~is_test
    images, labels = images[keep], labels[keep]
    if image_size != 8:
        import torch
        import torch.nn.functional as F
        t = torch.from_numpy(images)[:, None]
        t = F.interpolate(t, size=(image_size, image_size), mode='bilinear', align_corners=False)
        images = t[:, 0].clamp_(0, 1).numpy()
    images = (images * 255).round().astype(np.uint8)
    return images, labels



@DATASETS.register_module()
class SklearnDigitsDataset(BaseDataset):
    """scikit-learn's ``load_digits`` (1,797 images, 10 classes) upsampled to
    ``image_size`` and repeated to 3 channels, split into a stratified, seeded
    train / test partition.

    Args:
        split (str): ``'train'`` or ``'test'``. Defaults to ``'train'``.
        image_size (int): Side of the upsampled square images (bilinear).
            Defaults to 32.
        test_fraction (float): Share of each class held out for ``'test'``.
            Defaults to 0.2.
        seed (int): Seed of the split. Defaults to 0.
        pipeline (list): Data transforms. Defaults to ``[PackInputs]``.
        **kwargs: Passed to mmpretrain's ``BaseDataset``.
    """

    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 image_size: int = 32,
                 test_fraction: float = 0.2,
                 seed: int = 0,
                 pipeline: Optional[list] = None,
                 **kwargs) -> None:
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
        self.split = split
        self.image_size = image_size
        self.test_fraction = test_fraction
        self.seed = seed
        super().__init__(
            ann_file='',
            pipeline=pipeline if pipeline is not None else [dict(type='PackInputs')],
            test_mode=split == 'test',
            **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = _load_digits_split(self.split, self.image_size, self.test_fraction, self.seed)
        images = np.repeat(images[..., None], 3, axis=-1)  # HWC, 3 channels
        return [dict(img=img, gt_label=int(label)) for img, label in zip(images, labels)]
