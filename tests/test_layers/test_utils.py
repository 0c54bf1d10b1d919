# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.layers.utils: the orthonormal penalty against the naive
expression of the BSConv paper, the autocast helper and the detection of
graph transforms (tracing, torch.func)."""
import pytest
import torch

from mm_efficientconv.layers.utils import (_OrthonormalPenalty, autocast_disabled,
                                           functorch_transforms_active, in_graph_transform,
                                           orthonormal_penalty)


def naive_penalty(w: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||_F, written out in float64."""
    w = w.reshape(w.shape[0], -1).double()
    a = w @ w.t() - torch.eye(w.shape[0], dtype=torch.float64)
    return (a * a).sum().sqrt()


@pytest.mark.parametrize('shape', [(16, 96, 1, 1), (40, 240, 1, 1), (7, 7), (12, 4)])
def test_value_and_gradient_match_the_naive_expression(shape):
    torch.manual_seed(0)
    w = (torch.randn(*shape) * 0.2).requires_grad_()
    value = orthonormal_penalty(w)
    assert value.dtype == torch.float32 and value.dim() == 0
    (grad, ) = torch.autograd.grad(value * 1.5, w)
    w64 = w.detach().double().requires_grad_()
    expected = naive_penalty(w64)
    (expected_grad, ) = torch.autograd.grad(expected * 1.5, w64)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-5)


def test_gradients_of_every_order():
    torch.manual_seed(0)
    w = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_OrthonormalPenalty.apply, (w, ))
    assert torch.autograd.gradgradcheck(_OrthonormalPenalty.apply, (w, ))


def test_zero_penalty_has_zero_gradient():
    w = torch.eye(4, 6, requires_grad=True)  # orthonormal rows
    value = orthonormal_penalty(w)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_fp32_under_autocast_and_for_half_weights():
    torch.manual_seed(0)
    w = (torch.randn(8, 24) * 0.3).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = orthonormal_penalty(w)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), naive_penalty(w.detach()), rtol=1e-5, atol=1e-5)
    half = w.detach().bfloat16().requires_grad_()
    orthonormal_penalty(half).backward()
    assert half.grad.dtype == torch.bfloat16 and torch.isfinite(half.grad.float()).all()


def test_traced_penalty_equals_eager():
    torch.manual_seed(0)
    w = torch.randn(5, 9)
    traced = torch.jit.trace(orthonormal_penalty, (w, ))
    torch.testing.assert_close(traced(w * 2), orthonormal_penalty(w * 2))


def test_penalty_under_torch_func_equals_autograd():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 6)  # a batch of three weights for vmap
    per_weight = torch.func.vmap(torch.func.grad(orthonormal_penalty))(w)
    for i in range(3):
        wi = w[i].clone().requires_grad_()
        orthonormal_penalty(wi).backward()
        torch.testing.assert_close(per_weight[i], wi.grad)


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit.trace is deprecated, still used
def test_graph_transform_detection():
    assert not in_graph_transform() and not functorch_transforms_active()
    seen = []

    def probe(t):
        seen.append((in_graph_transform(), functorch_transforms_active()))
        return t * 2

    torch.func.vmap(probe)(torch.ones(2, 3))
    torch.jit.trace(probe, (torch.ones(2), ), check_trace=False)
    assert seen == [(True, True), (True, False)]


def test_autocast_disabled_is_a_no_op_without_autocast():
    with autocast_disabled('cpu'):
        assert not torch.is_autocast_enabled('cpu')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with autocast_disabled('cpu'):
            assert not torch.is_autocast_enabled('cpu')
        assert torch.is_autocast_enabled('cpu')
    with autocast_disabled('not-a-device'):
        pass
