# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Classification heads (registered in mmengine's root ``MODELS``)."""
from .dropout_linear_head import DropoutLinearClsHead

__all__ = ['DropoutLinearClsHead']
