# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.layers.batch_norm_act: the fused training-mode BatchNorm +
activation against the stock modules (values, gradients, running statistics,
memory formats) and every case in which it must leave the modules alone."""
import copy

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from mm_efficientconv.layers import batch_norm_act as bna
from mm_efficientconv.layers.batch_norm_act import FusedConvModule, batch_norm_act

pytestmark = [
    pytest.mark.usefixtures('one_thread', 'fused_on'),
    pytest.mark.skipif(bna._ext is None or not hasattr(bna._ext, 'batch_norm_act_forward'),
                       reason='compiled op mm_efficientconv._ext without batch_norm_act'),
]


@pytest.fixture
def fused_on():
    """The fused op on, whatever the environment of the test run says."""
    previous = bna.set_fused_batch_norm_act(True)
    yield
    bna.set_fused_batch_norm_act(previous)


@pytest.mark.parametrize('env, expected', [({}, 'True'), ({'MMEFF_FUSED_BN_ACT': '0'}, 'False'),
                                           ({'MMEFF_WITH_OPS': '0'}, 'False')])
def test_on_by_default_and_switched_off_by_the_environment(env, expected):
    import os
    import subprocess
    import sys
    clean = {k: v for k, v in os.environ.items()
             if k not in ('MMEFF_FUSED_BN_ACT', 'MMEFF_WITH_OPS')}
    code = ('from mm_efficientconv.layers import batch_norm_act as b; '
            'print(b.fused_batch_norm_act_available())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env=dict(clean, **env))
    assert out.stdout.strip().splitlines()[-1] == expected


ACTS = {'none': lambda: None, 'relu': lambda: nn.ReLU(inplace=True), 'silu': lambda: nn.SiLU(),
        'silu_inplace': lambda: nn.SiLU(inplace=True)}


def stock(x, norm, act):
    y = norm(x)
    return y if act is None else act(y)


def uses_fused_op(out: torch.Tensor) -> bool:
    return out.grad_fn is not None and '_BatchNormAct' in type(out.grad_fn).__name__


def make_input(shape=(4, 12, 9, 7), channels_last=False, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(*shape) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_norm(channels=12, **kwargs):
    norm = nn.BatchNorm2d(channels, **kwargs)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


@pytest.mark.parametrize('act_name', list(ACTS))
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_matches_the_stock_modules(act_name, channels_last, momentum):
    norm = make_norm(momentum=momentum)
    ref_norm = copy.deepcopy(norm)
    act, ref_act = ACTS[act_name](), ACTS[act_name]()
    for step in range(2):  # the running statistics of two steps (cumulative for momentum=None)
        x = make_input(channels_last=channels_last, seed=step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        out = batch_norm_act(x, norm, act)
        expected = stock(x_ref, ref_norm, ref_act)
        assert uses_fused_op(out)
        assert out.stride() == expected.stride()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        assert x.grad.stride() == x_ref.grad.stride()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.weight.grad, ref_norm.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(norm.bias.grad, ref_norm.bias.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(norm.running_mean, ref_norm.running_mean, rtol=1e-6,
                                   atol=1e-6)
        torch.testing.assert_close(norm.running_var, ref_norm.running_var, rtol=1e-6, atol=1e-6)
        assert norm.num_batches_tracked == ref_norm.num_batches_tracked == step + 1


@pytest.mark.parametrize('shape', [(4, 12, 1, 1), (3, 12, 1, 5), (1, 12, 2, 1)])
def test_shapes_that_are_both_nchw_and_channels_last(shape):
    """1x1 maps (a head after deep striding) are contiguous in both formats."""
    norm = make_norm()
    ref = copy.deepcopy(norm)
    x = make_input(shape, channels_last=True).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out, expected = batch_norm_act(x, norm, nn.SiLU()), stock(x_ref, ref, nn.SiLU())
    assert uses_fused_op(out)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(shape)  # an NCHW gradient for a channels-last-strided input
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_against_a_float64_reference():
    """The fused float32 op is as close to the exact value as stock float32."""
    norm = make_norm()
    x = make_input((8, 12, 16, 16)).requires_grad_()
    out = batch_norm_act(x, norm, nn.SiLU())
    x64 = x.detach().double().requires_grad_()
    norm64 = copy.deepcopy(norm).double()
    exact = stock(x64, norm64, nn.SiLU())
    stock32 = stock(x.detach(), copy.deepcopy(norm), nn.SiLU())
    fused_err = (out.double() - exact).abs().max().item()
    stock_err = (stock32.double() - exact).abs().max().item()
    assert fused_err <= max(4 * stock_err, 1e-6)
    grad = torch.randn_like(out)
    out.backward(grad)
    exact.backward(grad.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


def test_without_running_statistics_and_without_input_gradient():
    norm = make_norm(track_running_stats=False)
    ref = copy.deepcopy(norm)
    x = make_input(channels_last=True)  # no input gradient: only the affine ones
    out = batch_norm_act(x, norm, nn.ReLU())
    expected = stock(x, ref, nn.ReLU())
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(norm.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    assert norm.running_mean is None and norm.num_batches_tracked is None


def test_frozen_affine_parameters_get_no_gradient():
    norm = make_norm()
    norm.requires_grad_(False)
    x = make_input().requires_grad_()
    out = batch_norm_act(x, norm, nn.SiLU())
    assert uses_fused_op(out)
    out.sum().backward()
    assert norm.weight.grad is None and norm.bias.grad is None and x.grad is not None


def test_no_grad_training_forward_updates_the_statistics():
    """A momentum encoder / EMA-style forward: training mode, no graph."""
    norm, ref = make_norm(), None
    ref = copy.deepcopy(norm)
    x = make_input()
    with torch.no_grad():
        out = batch_norm_act(x, norm, nn.SiLU())
        expected = stock(x, ref, nn.SiLU())
    assert out.grad_fn is None
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_var, ref.running_var)


def test_double_backward_raises():
    norm = make_norm()
    x = make_input().requires_grad_()
    out = batch_norm_act(x, norm, nn.SiLU())
    (g, ) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|differentiate'):
        g.sum().backward()


def test_forward_mode_ad_raises():
    import torch.autograd.forward_ad as fwAD
    norm, x = make_norm(), make_input()
    with fwAD.dual_level(), pytest.raises(NotImplementedError, match='jvp'):
        batch_norm_act(fwAD.make_dual(x, torch.ones_like(x)), norm, nn.SiLU())


def test_one_value_per_channel_raises_like_stock():
    norm = make_norm()
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        batch_norm_act(torch.randn(1, 12, 1, 1), norm, nn.ReLU())


class _SubclassBN(nn.BatchNorm2d):
    pass


@pytest.mark.parametrize('case', [
    'eval', 'subclass_norm', 'group_norm', 'other_act', 'relu6', 'no_affine', 'float64', 'bfloat16',
    'strided', 'forward_hook', 'global_hook', 'disabled'
])
def test_falls_back_to_the_modules(case):
    """Wherever the fused op would not be what the modules do, the modules
    run: identical results, hooks called."""
    x = make_input()
    norm, act = make_norm(), nn.SiLU()
    calls = []
    undo = lambda: None  # noqa: E731
    if case == 'eval':
        norm.eval()
    elif case == 'subclass_norm':
        norm = _SubclassBN(12)
    elif case == 'group_norm':
        norm = nn.GroupNorm(3, 12)
    elif case == 'other_act':
        act = nn.Hardswish()
    elif case == 'relu6':
        act = nn.ReLU6()  # a subclass of Hardtanh, not of ReLU
    elif case == 'no_affine':
        norm = nn.BatchNorm2d(12, affine=False)
    elif case == 'float64':
        x, norm = x.double(), norm.double()
    elif case == 'bfloat16':
        x, norm = x.bfloat16(), norm.bfloat16()
    elif case == 'strided':
        x = x[:, :, ::2]
    elif case == 'forward_hook':
        norm.register_forward_hook(lambda *a: calls.append('hook'))
    elif case == 'global_hook':
        handle = nn.modules.module.register_module_forward_hook(
            lambda *a: calls.append('hook'))
        undo = handle.remove
    elif case == 'disabled':
        previous = bna.set_fused_batch_norm_act(False)
        undo = lambda: bna.set_fused_batch_norm_act(previous)  # noqa: E731
    ref_norm, ref_act = copy.deepcopy(norm), copy.deepcopy(act)
    try:
        out = batch_norm_act(x.requires_grad_(), norm, act)
    finally:
        undo()
    assert not uses_fused_op(out)
    if case in ('forward_hook', 'global_hook'):
        assert calls
    expected = stock(x.detach(), ref_norm, ref_act)
    assert torch.equal(out, expected)


def test_tracing_sees_the_stock_ops():
    module = FusedConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN'),
                             act_cfg=dict(type='SiLU')).train()
    x = torch.randn(2, 3, 8, 8)
    traced = torch.jit.trace(module, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert 'batch_norm' in graph and 'silu' in graph


def test_fx_symbolic_trace_records_the_stock_modules():
    """As for mmcv's ConvModule, ``activate`` / ``norm`` must be concrete."""
    import torch.fx
    module = FusedConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN'),
                             act_cfg=dict(type='SiLU')).train()
    graph_module = torch.fx.symbolic_trace(module, concrete_args={'activate': True, 'norm': True})
    called = [n.target for n in graph_module.graph.nodes if n.op == 'call_module']
    assert called == ['conv', 'bn', 'activate']
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(graph_module(x), copy.deepcopy(module)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('act_cfg', [dict(type='SiLU'), dict(type='ReLU'), None])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_conv_module_is_a_conv_module(act_cfg, channels_last):
    torch.manual_seed(0)
    ref = ConvModule(6, 12, 3, padding=1, norm_cfg=dict(type='BN'), act_cfg=act_cfg)
    ours = FusedConvModule(6, 12, 3, padding=1, norm_cfg=dict(type='BN'), act_cfg=act_cfg)
    assert isinstance(ours, ConvModule)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = make_input((4, 6, 10, 10), channels_last=channels_last)
    for mode in ('train', 'eval'):
        ours.train(mode == 'train')
        ref.train(mode == 'train')
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = ours(xo), ref(xr)
        assert uses_fused_op(out) == (mode == 'train')
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        out.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.conv.weight.grad, ref.conv.weight.grad, rtol=1e-4,
                                   atol=1e-4)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf)
    # activate=False: the norm alone (fused, identity); norm=False: ConvModule's own forward
    ours.train()
    ref.train()
    torch.testing.assert_close(ours(x, activate=False), ref(x, activate=False), rtol=1e-5,
                               atol=1e-5)
    out = ours(x, norm=False)
    assert not uses_fused_op(out) and torch.equal(out, ref(x, norm=False))


def test_mixnet_training_step_is_as_accurate_as_the_stock_modules():
    """A MixNet-S training step with every BN + activation fused is as accurate
    as with the stock modules: each gradient's error against float64 is within
    a small factor of stock float32's (some gradients are exactly 0 in exact
    arithmetic, e.g. the bias of a BN that another BN follows, so relative
    closeness says nothing). The setting of the SSDLite demo (BN eps 1e-3,
    128x128, batch 4). SiLU everywhere (``act_cfg``): with ReLUs, a unit whose
    input lies within float32 rounding of zero can land on either side in
    either float32 run (seen for the fused and for the stock modules, one unit
    in a step), and a max-abs comparison then carries that unit's whole
    contribution into every gradient below it; the ReLU path is compared layer
    by layer above."""
    from mm_efficientconv.backbones import MixNet
    torch.manual_seed(0)
    model = nn.ModuleDict(dict(
        backbone=MixNet(arch='s', out_indices=(3, 5, 7), norm_cfg=dict(type='BN', eps=1e-3),
                        act_cfg=dict(type='SiLU')),
        head=nn.Linear(1536, 10))).train()
    assert sum(type(m) is FusedConvModule for m in model.modules()) > 40
    ref, ref64 = copy.deepcopy(model), copy.deepcopy(model).double()
    x, target = torch.randn(4, 3, 128, 128), torch.randint(0, 10, (4, ))

    def loss_of(m, inputs):
        logits = m['head'](m['backbone'](inputs)[-1].mean((2, 3)))
        return nn.functional.cross_entropy(logits, target)

    loss = loss_of(model, x)
    previous = bna.set_fused_batch_norm_act(False)
    try:
        expected, exact = loss_of(ref, x), loss_of(ref64, x.double())
    finally:
        bna.set_fused_batch_norm_act(previous)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    for y in (loss, expected, exact):
        y.backward()
    for (name, p), q, r in zip(model.named_parameters(), ref.parameters(), ref64.parameters()):
        if r.grad is None:
            continue
        fused_err = (p.grad.double() - r.grad).abs().max().item()
        stock_err = (q.grad.double() - r.grad).abs().max().item()
        assert fused_err <= 3 * stock_err + 1e-7 * r.grad.abs().max().item(), name
    for (name, b), c in zip(model.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6, msg=name)
