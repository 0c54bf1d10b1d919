# MixNet-L (Tan & Le, BMVC 2019): MixNet-M with channel multiplier 1.3 (head
# stays 1536); the recipe of MixNet-S. Paper: 7.3M params, 565M FLOPs, 78.9 top-1.
_base_ = ['./mixnet-s_8xb32_in1k.py']

model = dict(backbone=dict(arch='l'), head=dict(dropout_rate=0.25))
