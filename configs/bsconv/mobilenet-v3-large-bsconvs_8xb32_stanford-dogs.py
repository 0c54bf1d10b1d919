# Copyright (c) mm_efficientconv contributors. All rights reserved.
# MobileNetV3-large with BSConv-S on Stanford Dogs, from scratch (BSConv Table 1, fine-grained).
# Same data, schedule and head as the baseline config; the architecture and parameters are
# unchanged (BSConvSMobileNetV3 = mmpretrain's MobileNetV3 with `reg_loss()` on every block's
# projection 1x1 conv) and OrthoRegHook adds alpha * sum ||W W^T - I||_F to the loss as
# `loss_ortho`, alpha = 0.1 (the paper's value for the fine-grained sets).
_base_ = './mobilenet-v3-large_8xb32_stanford-dogs.py'

model = dict(backbone=dict(type='BSConvSMobileNetV3', arch='large'))

custom_hooks = [dict(type='OrthoRegHook', alpha=0.1)]
