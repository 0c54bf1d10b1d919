# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Datasets and data transforms (registered in mmengine's root registries)."""
from .digit_scenes import write_digit_scenes
from .digits import SklearnDigitsDataset
from .transforms import RandomGamma

__all__ = ['RandomGamma', 'SklearnDigitsDataset', 'write_digit_scenes']
