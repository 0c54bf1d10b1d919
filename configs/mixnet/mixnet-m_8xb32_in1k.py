# MixNet-M (Tan & Le, BMVC 2019) on ImageNet-1k; the recipe of MixNet-S.
# Paper: 5.0M params, 360M FLOPs, 77.0 top-1.
_base_ = ['./mixnet-s_8xb32_in1k.py']

model = dict(backbone=dict(arch='m'), head=dict(dropout_rate=0.25))
