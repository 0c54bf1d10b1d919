# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Data transforms the paper protocols need and no OpenMMLab codebase has.

Registered in mmengine's root ``TRANSFORMS`` registry, so pipelines of
mmpretrain, mmdet and mmseg configs all find them.
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomGamma(BaseTransform):
    """Random gamma correction ``out = 255 * (img / 255) ** gamma`` (the "random
    gamma" augmentation of the BSConv fine-grained protocol).

    ``gamma`` is drawn log-uniformly from ``gamma_range``, so ``(1/g, g)`` is
    symmetric: brightening and darkening are equally likely. ``uint8`` images
    go through a 256-entry lookup table; float images are treated as being in
    ``[0, 255]`` and keep their dtype.

    Required keys: ``img``. Modified keys: ``img``. Added keys: ``gamma``
    (the applied value, 1.0 when skipped).

    Args:
        gamma_range (tuple[float, float]): Lower and upper gamma, both > 0.
            Defaults to ``(0.8, 1.25)``.
        prob (float): Probability of applying the transform. Defaults to 1.0.
    """

    def __init__(self, gamma_range: Tuple[float, float] = (0.8, 1.25), prob: float = 1.0) -> None:
        if (not isinstance(gamma_range, (tuple, list)) or len(gamma_range) != 2
                or not all(isinstance(g, (int, float)) and g > 0 for g in gamma_range)
                or gamma_range[0] > gamma_range[1]):
            raise ValueError('gamma_range must be a (low, high) pair with 0 < low <= high, '
                             f'got {gamma_range!r}')
        if not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be a number in [0, 1], got {prob!r}')
        self.gamma_range = (float(gamma_range[0]), float(gamma_range[1]))
        self.prob = float(prob)

    def _sample_gamma(self) -> Optional[float]:
        if np.random.rand() >= self.prob:
            return None
        low, high = (math.log(g) for g in self.gamma_range)
        return float(math.exp(np.random.uniform(low, high)))

    @staticmethod
    def adjust(img: np.ndarray, gamma: float) -> np.ndarray:
        """Applies ``255 * (img / 255) ** gamma`` to a ``[0, 255]`` image."""
        if img.dtype == np.uint8:
            table = np.round(255.0 * (np.arange(256) / 255.0)**gamma)
            return table.astype(np.uint8)[img]
        scaled = np.clip(img, 0, 255) / 255.0
        return (255.0 * scaled**gamma).astype(img.dtype)

    def transform(self, results: Dict) -> Dict:
        gamma = self._sample_gamma()
        if gamma is not None:
            results['img'] = self.adjust(results['img'], gamma)
        results['gamma'] = 1.0 if gamma is None else gamma
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(gamma_range={self.gamma_range}, prob={self.prob})'
