# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV2 x1.0 with MixConv(3, 5, 7) depthwise convs (MixConv paper, "mixconv357": every 3x3
# depthwise conv split into three equal channel groups with 3x3, 5x5 and 7x7 kernels; the 1x1
# convs and the dense stem stay plain). Everything else is mmpretrain's
# mobilenet-v2_8xb32_in1k recipe (71.86% top-1 baseline), so the two runs differ only in the
# depthwise kernels.
_base_ = 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(backbone=dict(conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7))))
