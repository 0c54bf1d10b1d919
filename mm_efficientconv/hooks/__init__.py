# Copyright (c) mm_efficientconv contributors. All rights reserved.
from .deploy import ConvDeployHook
from .kernel_cache import KernelCacheHook
from .ortho_reg import OrthoRegHook

__all__ = ['OrthoRegHook', 'ConvDeployHook', 'KernelCacheHook']
