# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A linear classification head with dropout before the classifier."""
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS
from mmpretrain.models.heads import LinearClsHead


@MODELS.register_module()
class DropoutLinearClsHead(LinearClsHead):
    """mmpretrain's ``LinearClsHead`` with dropout on the pooled features, as
    the MnasNet-style recipes (EfficientNet, MixNet: 0.2 for S, 0.25 for M/L)
    use. Same parameters and state-dict keys as ``LinearClsHead``, so
    checkpoints move freely between the two.

    Args:
        num_classes (int): Number of categories.
        in_channels (int): Number of input channels.
        dropout_rate (float): Dropout probability in ``[0, 1)``, applied in
            training only. Defaults to 0.2.
        **kwargs: Passed to ``LinearClsHead`` (``loss``, ``topk``,
            ``init_cfg``, ...).
    """

    def __init__(self, num_classes: int, in_channels: int, dropout_rate: float = 0.2,
                 **kwargs) -> None:
        if not 0 <= dropout_rate < 1:
            raise ValueError(f'dropout_rate must be in [0, 1), got {dropout_rate!r}')
        super().__init__(num_classes, in_channels, **kwargs)
        self.dropout_rate = dropout_rate
        self.dropout = nn.Dropout(dropout_rate)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.dropout(feats[-1])
