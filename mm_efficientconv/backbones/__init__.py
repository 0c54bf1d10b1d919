# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Backbones of the three papers (registered in mmengine's root ``MODELS``)."""
from .mixnet import MixNet
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2_bsconvs import BSConvSMobileNetV2
from .mobilenet_v3_bsconvs import BSConvSMobileNetV3
from .resnet_basic import BasicBlockResNet
from .resnet_cifar import CifarResNet, CifarWideResNet

__all__ = [
    'MobileNetV1', 'BSConvSMobileNetV2', 'BSConvSMobileNetV3', 'CifarResNet', 'CifarWideResNet',
    'BasicBlockResNet', 'MixNet'
]
