# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A layer's output is always a function of its current parameters: copies
written through ``.data`` (EMA, momentum encoders, teachers), tracing and
compiling; kernels are reused only inside ``cached_kernels()``."""
import copy

import pytest
import torch
import torch.nn as nn

from mm_efficientconv.layers import (DOConv, MixConv, MixGroupedPointwise, cached_kernels,
                                     kernel_cache)

pytestmark = pytest.mark.usefixtures('one_thread')

LAYERS = {
    'doconv': lambda: DOConv(6, 6, 3, padding=1),
    'doconv_grouped_dmul': lambda: DOConv(6, 6, 3, padding=1, groups=2, D_mul=11),
    'mixconv': lambda: MixConv(6, 6, 3, padding=1, groups=6, kernel_sizes=(3, 5)),
    'mix_pointwise': lambda: MixGroupedPointwise(6, 6, num_splits=2),
}


def _model(name):
    torch.manual_seed(0)
    return nn.Sequential(LAYERS[name](), nn.BatchNorm2d(6), nn.ReLU(), LAYERS[name]())


def _fresh_output(model, x):
    """The output of a brand-new model holding ``model``'s current values."""
    fresh = copy.deepcopy(model)
    fresh.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    with torch.no_grad():
        return fresh(x)


def _train_step(model, opt, x):
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


@pytest.mark.parametrize('name', list(LAYERS))
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_mmengine_ema_model(name, mode):
    from mmengine.model import ExponentialMovingAverage
    model = _model(name)
    ema = ExponentialMovingAverage(model, momentum=0.5)
    ema.train(mode == 'train')
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(2, 6, 8, 8)
    outputs = []
    for _ in range(3):
        _train_step(model, opt, x)
        ema.update_parameters(model)  # writes through `.data`, no mode switch
        with torch.no_grad():
            out = ema(x)
        assert torch.allclose(out, _fresh_output(ema.module, x), atol=1e-6)
        outputs.append(out)
    assert not torch.allclose(outputs[0], outputs[-1])


@pytest.mark.parametrize('name', list(LAYERS))
def test_momentum_encoder(name):
    """MoCo / BYOL: a frozen copy kept in train mode, updated through
    ``.data`` and forwarded under ``no_grad`` every iteration."""
    online = _model(name)
    target = copy.deepcopy(online).requires_grad_(False).train()
    opt = torch.optim.SGD(online.parameters(), lr=0.5)
    x = torch.randn(2, 6, 8, 8)
    for _ in range(3):
        _train_step(online, opt, x)
        for p_t, p_o in zip(target.parameters(), online.parameters()):
            p_t.data.mul_(0.5).add_(p_o.data, alpha=0.5)
        with torch.no_grad():
            out = target(x)
        assert torch.allclose(out, _fresh_output(target, x), atol=1e-6)


def test_mmpretrain_cosine_ema():
    models_utils = pytest.importorskip('mmpretrain.models.utils')
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('max_iters', 10)  # read by CosineEMA
    online = _model('doconv')
    target = models_utils.CosineEMA(online, momentum=0.5)
    opt = torch.optim.SGD(online.parameters(), lr=0.5)
    x = torch.randn(2, 6, 8, 8)
    for _ in range(3):
        _train_step(online, opt, x)
        target.update_parameters(online)
        with torch.no_grad():
            out = target(x)
        assert torch.allclose(out, _fresh_output(target.module, x), atol=1e-6)


@pytest.mark.parametrize('name', list(LAYERS))
def test_frozen_eval_teacher_written_through_data(name):
    student = _model(name)
    teacher = copy.deepcopy(student).requires_grad_(False).eval()
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        teacher(x)  # a first forward (would fill an implicit cache)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(2):
        _train_step(student, opt, x)
        for p_t, p_s in zip(teacher.parameters(), student.parameters()):
            p_t.data.copy_(p_s.data)
        with torch.no_grad():
            out = teacher(x)
        assert torch.allclose(out, _fresh_output(teacher, x), atol=1e-6)


@pytest.mark.parametrize('name', list(LAYERS))
@pytest.mark.parametrize('scoped', [False, True])
def test_jit_trace_reads_the_parameters(name, scoped):
    model = _model(name).eval()
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad(), (cached_kernels() if scoped else torch.enable_grad()):
        model(x)  # a forward before tracing (would fill an implicit cache)
        traced = torch.jit.trace(model, x, check_trace=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-0.5)
        assert torch.allclose(traced(x), model(x), atol=1e-6)
        assert torch.allclose(traced(x), _fresh_output(model, x), atol=1e-6)


@pytest.mark.parametrize('name', ['doconv', 'mixconv'])
def test_torch_compile_after_a_parameter_change(name):
    layer = LAYERS[name]().eval()
    x = torch.randn(1, 6, 8, 8)
    try:
        compiled = torch.compile(layer, backend='eager', dynamic=False)
        with torch.no_grad():
            compiled(x)
    except Exception as err:  # noqa: BLE001 - any failure of the compiler itself
        pytest.skip(f'torch.compile unavailable here: {type(err).__name__}: {err}')
    with torch.no_grad():
        for p in layer.parameters():
            p.data.mul_(-0.5)  # bypasses the version counters
        assert torch.allclose(compiled(x), _fresh_output(layer, x), atol=1e-6)
        with cached_kernels():
            assert torch.allclose(compiled(x), _fresh_output(layer, x), atol=1e-6)


@pytest.mark.parametrize('name', list(LAYERS))
def test_scope_composes_once_and_drops_on_exit(name):
    model = _model(name).eval()
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        ref = model(x)
    assert not kernel_cache.kernel_cache_active()
    with cached_kernels(), torch.no_grad():
        assert kernel_cache.kernel_cache_active()
        first = model(x)
        entries = {k: v[2] for k, v in kernel_cache._entries.items()}
        assert len(entries) == 2  # one kernel per layer
        second = model(x)
        assert all(kernel_cache._entries[k][2] is v for k, v in entries.items())  # reused
    assert torch.equal(first, second) and torch.allclose(first, ref, atol=1e-6)
    assert not kernel_cache._entries and not kernel_cache.kernel_cache_active()
    # where a gradient is needed nothing is cached, even inside a scope
    model.train()
    with cached_kernels():
        model(x).sum().backward()
        assert not kernel_cache._entries
    assert all(p.grad is not None for p in model.parameters())


def test_scope_is_dropped_when_the_body_raises():
    layer = LAYERS['doconv']().eval()
    with pytest.raises(KeyError):
        with cached_kernels(), torch.no_grad():
            layer(torch.randn(1, 6, 5, 5))
            raise KeyError('boom')
    assert not kernel_cache._entries and not kernel_cache.kernel_cache_active()


def test_deprecated_cache_switches_still_work():
    layer = LAYERS['mixconv']()
    with pytest.warns(DeprecationWarning):
        layer.invalidate_cache()
    with pytest.warns(DeprecationWarning):
        LAYERS['mix_pointwise']().invalidate_cache()
