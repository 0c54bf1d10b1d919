# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV1 x1.0 with BSConv-U blocks (BSConv paper, section 4.1; Table 3: 70.8 -> 71.5% top-1):
# every depthwise-separable block becomes BSConvU (1x1 conv, then 3x3 depthwise conv) followed by
# one BN + ReLU. Same protocol as the baseline config it inherits from.
_base_ = './mobilenet-v1_8xb32_in1k.py'

model = dict(backbone=dict(block_type='bsconvu'))
