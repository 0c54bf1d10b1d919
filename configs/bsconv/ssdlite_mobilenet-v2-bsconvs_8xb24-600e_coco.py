# Copyright (c) mm_efficientconv contributors. All rights reserved.
# SSDLite MobileNetV2 with BSConv-S on COCO: mmdet's ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py
# (21.3 box AP) with the BSConv-S treatment of MobileNetV2 (BSConv paper, section 4.2): the
# architecture and parameters are unchanged (BSConvSMobileNetV2 = MobileNetV2 with `reg_loss()`
# on every block's projection 1x1 conv, same arguments and checkpoint keys) and OrthoRegHook adds
# alpha * sum ||W W^T - I||_F to the loss as `loss_ortho`, alpha = 0.1 (the paper's value for
# ImageNet and the fine-grained sets; it has no detection experiment).
_base_ = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'

custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)

model = dict(backbone=dict(type='BSConvSMobileNetV2'))

custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='OrthoRegHook', alpha=0.1),
]
