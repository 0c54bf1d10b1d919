# Copyright (c) mm_efficientconv contributors. All rights reserved.
from .deploy import ConvDeployHook
from .ortho_reg import OrthoRegHook

__all__ = ['OrthoRegHook', 'ConvDeployHook']
