# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The shared ``nn.Conv2d`` contract of :class:`EfficientConv2d` under torch
utilities that act on a conv from outside. No exact parity possible, so a
clear error, the layer untouched and the suggested route working:
``torch.jit.script``, pruning the composed ``weight``. As for a stock conv:
``torch.jit.trace`` with its check, pruning a plain-mode layer,
``fuse_conv_bn_eval``, meta-device construction, ``torch.func`` transforms."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from mmcv.cnn import ConvModule
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mm_efficientconv.layers import BSConvS, BSConvU, DOConv, MixConv, cached_kernels

# torch.jit.trace / script are deprecated, still used
pytestmark = [pytest.mark.usefixtures('one_thread'),
              pytest.mark.filterwarnings('ignore::FutureWarning')]

# name -> (layer factory, input channels); every layer in transform mode
LAYERS = {
    'doconv': (lambda: DOConv(8, 12, 3, padding=1, bias=False), 8),
    'bsconv_u': (lambda: BSConvU(8, 12, 3, padding=1), 8),
    'bsconv_s': (lambda: BSConvS(8, 12, 3, padding=1, bias=False), 8),
    'mixconv': (lambda: MixConv(12, 12, 3, padding=1, groups=12, kernel_sizes=(3, 5)), 12),
}


def _layer_and_input(name, layers=None):
    torch.manual_seed(0)
    build, cin = (layers or LAYERS)[name]
    return build().eval(), torch.randn(2, cin, 10, 10)


@pytest.mark.parametrize('name', list(LAYERS))
def test_jit_script_raises_a_clear_error_and_the_alternatives_work(name):
    layer, x = _layer_and_input(name)
    model = nn.Sequential(layer, nn.ReLU()).eval()
    expected = model(x)
    with pytest.raises(RuntimeError, match=rf'torch\.jit\.script cannot compile '
                                           rf'{type(layer).__name__}.*torch\.jit\.trace'):
        torch.jit.script(model)
    assert model[0] is layer  # nothing was swapped in the user's model
    traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), expected)
    scripted = torch.jit.script(nn.Sequential(layer.to_plain_conv(), nn.ReLU()))
    torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)


def test_jit_script_raises_for_a_plain_mode_layer_inside_conv_module():
    module = ConvModule(8, 8, 1, conv_cfg=dict(type='DOConv'), norm_cfg=dict(type='BN'))
    assert module.conv.plain
    with pytest.raises(RuntimeError, match='torch.jit.script cannot compile DOConv'):
        torch.jit.script(module)


@pytest.mark.parametrize('name', ['doconv', 'bsconv_u', 'bsconv_s'])
def test_prune_of_the_composed_weight_raises_and_leaves_the_layer_untouched(name):
    layer, x = _layer_and_input(name)
    state = copy.deepcopy(layer.state_dict())
    expected = layer(x)
    with pytest.raises(TypeError, match=rf"{type(layer).__name__}\.weight is the kernel composed "
                                        r".*cannot be registered as 'weight_orig'.*to_plain_conv"):
        prune.l1_unstructured(layer, 'weight', amount=0.5)
    assert list(layer.state_dict()) == list(state)
    assert not layer._forward_pre_hooks
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    # the suggested route: the equal stock conv prunes as any conv does
    conv = prune.l1_unstructured(layer.to_plain_conv(), 'weight', amount=0.5)
    assert float((conv.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


# call sites the transforms do not apply to: plain mode, a real `weight` Parameter
PLAIN_LAYERS = {
    'doconv_1x1': lambda: DOConv(8, 12, 1),
    'bsconv_u_1x1': lambda: BSConvU(8, 12, 1),
    'bsconv_s_1x1': lambda: BSConvS(8, 12, 1),
    'mixconv_one_kernel': lambda: MixConv(8, 8, 3, padding=1, groups=8, kernel_sizes=(3, )),
}


@pytest.mark.parametrize('name', list(PLAIN_LAYERS))
def test_prune_of_a_plain_mode_layer_equals_stock(name):
    torch.manual_seed(0)
    layer = PLAIN_LAYERS[name]()
    assert layer.plain
    stock = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                      padding=layer.padding, groups=layer.groups)
    stock.load_state_dict(layer.state_dict())
    for module in (layer, stock):
        prune.l1_unstructured(module, 'weight', amount=0.3)
    assert sorted(layer.state_dict()) == sorted(stock.state_dict())
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(layer(x), stock(x), rtol=0, atol=0)
    torch.testing.assert_close(layer.to_plain_conv()(x), stock(x), rtol=0, atol=0)


@pytest.mark.parametrize('name', list(LAYERS))
def test_torch_fuse_conv_bn_eval_equals_conv_then_bn(name):
    layer, x = _layer_and_input(name)
    bn = nn.BatchNorm2d(layer.out_channels).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    before = layer(x)
    expected = bn(before)
    fused = fuse_conv_bn_eval(layer, bn)
    assert type(fused) is type(layer) and fused is not layer
    torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=0)  # the input layer is untouched


META_LAYERS = dict(
    LAYERS,
    doconv_grouped_dmul=(lambda: DOConv(8, 12, 3, padding=1, groups=2, D_mul=12), 8),
    doconv_1x1=(lambda: DOConv(8, 12, 1), 8),
)


@pytest.mark.parametrize('name', list(META_LAYERS))
def test_meta_device_construction_then_real_weights(name):
    """Large-model init: build on the meta device, then ``to_empty()`` +
    ``load_state_dict`` (or ``reset_parameters``), or ``load_state_dict(...,
    assign=True)``: the same function as the layer built eagerly, as for
    ``nn.Conv2d`` (nothing uninitialised left behind)."""
    eager, x = _layer_and_input(name, META_LAYERS)
    build = META_LAYERS[name][0]
    with torch.device('meta'):
        empty, assigned, reset = build(), build(), build()
    empty = empty.to_empty(device='cpu').eval()
    empty.load_state_dict(eager.state_dict())
    torch.testing.assert_close(empty(x), eager(x), rtol=0, atol=0)
    assigned.load_state_dict(eager.state_dict(), assign=True)
    torch.testing.assert_close(assigned.eval()(x), eager(x), rtol=0, atol=0)
    reset = reset.to_empty(device='cpu')
    reset.reset_parameters()
    weight = reset.weight.detach()
    assert torch.isfinite(reset(x)).all() and weight.std() > 0
    torch.testing.assert_close(reset(x), reset._conv_forward(x, weight, reset.bias))


@pytest.mark.parametrize('name', list(META_LAYERS))
def test_torch_func_per_sample_gradients(name):
    """``vmap(grad(...))`` over ``functional_call`` (per-sample gradients, as
    in differentially private training) equals autograd sample by sample, and
    ``vmap`` of the forward equals the batched forward."""
    from torch.func import functional_call, grad, vmap
    layer, x = _layer_and_input(name, META_LAYERS)
    layer.train()
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, sample):
        return functional_call(layer, p, (sample.unsqueeze(0), )).pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        layer.zero_grad()
        layer(x[i:i + 1]).pow(2).sum().backward()
        for key, param in layer.named_parameters():
            scale = param.grad.abs().max().item()
            torch.testing.assert_close(per_sample[key][i], param.grad, rtol=1e-4,
                                       atol=1e-5 * scale)
    batched = vmap(lambda sample: layer(sample.unsqueeze(0)))(x).squeeze(1)
    torch.testing.assert_close(batched, layer(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), cached_kernels():  # a cache scope does not get in the way
        layer(x)
        batched = vmap(lambda sample: layer(sample.unsqueeze(0)))(x).squeeze(1)
        torch.testing.assert_close(batched, layer(x), rtol=1e-5, atol=1e-5)
