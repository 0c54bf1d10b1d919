# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Tests of the DO-Conv kernel composition: the fused CPU kernel against the
PyTorch formulation and against a loop written from the paper, its gradients,
and when the dispatch takes which path."""
import pytest
import torch

import mm_efficientconv.layers.doconv_compose as compose_module
from mm_efficientconv.layers.doconv import DOConv
from mm_efficientconv.layers.doconv_compose import (compose_residual, compose_with_matmul,
                                                    doconv_compose, doconv_kernel,
                                                    fused_compose_available, set_fused_compose,
                                                    uses_fused_compose)

needs_ext = pytest.mark.skipif(
    compose_module._ext is None,
    reason=f'compiled op mm_efficientconv._ext not built: {compose_module._EXT_ERROR}')

# (out, in, groups): plain, grouped, depthwise, depthwise with multiplier, odd sizes,
# out per group not a multiple of the kernel's 4-row blocks, a single input channel
SHAPES = [(8, 6, 1), (12, 6, 3), (6, 6, 6), (12, 6, 6), (5, 7, 1), (3, 1, 1), (10, 4, 2),
          (33, 17, 1), (64, 64, 1)]


def naive_compose(W, D, groups):
    """``K[o, j, t] = sum_m D[c, t, m] W[o, j, m]`` with ``c`` the true input
    channel of slice ``(o, j)``, as explicit loops over groups and channels."""
    out_c, in_per_group, _ = W.shape
    out_per_group = out_c // groups
    K = torch.empty(out_c, in_per_group, D.shape[1], dtype=W.dtype)
    for o in range(out_c):
        for j in range(in_per_group):
            c = (o // out_per_group) * in_per_group + j
            K[o, j] = D[c] @ W[o, j]
    return K


def operands(out_c, in_c, groups, dtype=torch.float64, taps=9, d_mul=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(out_c, in_c // groups, d_mul, generator=gen, dtype=dtype)
    D = torch.randn(in_c, taps, d_mul, generator=gen, dtype=dtype)
    return W, D


@pytest.fixture
def fused_on():
    previous = set_fused_compose(True)
    yield
    set_fused_compose(previous)


@needs_ext
@pytest.mark.parametrize('out_c,in_c,groups', SHAPES)
def test_fused_matches_naive_and_matmul_float64(fused_on, out_c, in_c, groups):
    W, D = operands(out_c, in_c, groups)
    assert uses_fused_compose(W, D)
    fused = doconv_compose(W, D, groups, (3, 3))
    assert fused.shape == (out_c, in_c // groups, 3, 3) and fused.is_contiguous()
    torch.testing.assert_close(fused.flatten(2), naive_compose(W, D, groups), rtol=0, atol=1e-12)
    torch.testing.assert_close(fused, compose_with_matmul(W, D, groups, (3, 3)), rtol=0, atol=1e-12)


@needs_ext
@pytest.mark.parametrize('out_c,in_c,groups', SHAPES)
def test_fused_gradients_match_matmul(fused_on, out_c, in_c, groups):
    grads = []
    for fused in (True, False):
        set_fused_compose(fused)
        W, D = operands(out_c, in_c, groups)
        W.requires_grad_(True)
        D.requires_grad_(True)
        upstream = torch.randn(out_c, in_c // groups, 3, 3, dtype=W.dtype,
                               generator=torch.Generator().manual_seed(1))
        (doconv_compose(W, D, groups, (3, 3)) * upstream).sum().backward()
        grads.append((W.grad, D.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-11)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-11)


@needs_ext
@pytest.mark.parametrize('out_c,in_c,groups', [(5, 7, 1), (64, 96, 1), (24, 24, 24), (32, 16, 4)])
def test_fused_float32_close_to_float64(fused_on, out_c, in_c, groups):
    W, D = operands(out_c, in_c, groups)
    W32, D32 = W.float().requires_grad_(True), D.float().requires_grad_(True)
    W64, D64 = W.clone().requires_grad_(True), D.clone().requires_grad_(True)
    upstream = torch.randn(out_c, in_c // groups, 3, 3, dtype=torch.float64)
    k32 = doconv_compose(W32, D32, groups, (3, 3))
    k64 = compose_with_matmul(W64, D64, groups, (3, 3))
    torch.testing.assert_close(k32.double(), k64, rtol=1e-5, atol=1e-5)
    (k32 * upstream.float()).sum().backward()
    (k64 * upstream).sum().backward()
    torch.testing.assert_close(W32.grad.double(), W64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(D32.grad.double(), D64.grad, rtol=1e-5, atol=1e-4)


@needs_ext
@pytest.mark.parametrize('kernel_size', [(1, 9), (9, 1)])
def test_fused_non_square_nine_tap_kernels(fused_on, kernel_size):
    W, D = operands(6, 4, 2)
    assert uses_fused_compose(W, D)
    torch.testing.assert_close(doconv_compose(W, D, 2, kernel_size),
                               compose_with_matmul(W, D, 2, kernel_size), rtol=0, atol=1e-12)


@needs_ext
@pytest.mark.parametrize('out_c,in_c,groups', [(4, 3, 1), (4, 4, 2), (3, 3, 3), (5, 2, 1)])
def test_fused_gradcheck_and_gradgradcheck(fused_on, out_c, in_c, groups):
    W, D = operands(out_c, in_c, groups)
    W.requires_grad_(True)
    D.requires_grad_(True)

    def fn(w, d):
        return doconv_compose(w, d, groups, (3, 3))

    assert torch.autograd.gradcheck(fn, (W, D))
    # second order goes through the PyTorch formulation inside the fused backward
    assert torch.autograd.gradgradcheck(fn, (W, D))


@needs_ext
def test_fused_backward_does_not_depend_on_thread_count(fused_on):
    W, D = operands(96, 64, 1, dtype=torch.float32)
    upstream = torch.randn(96, 64, 3, 3)
    previous_threads = torch.get_num_threads()
    grads = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            w, d = W.clone().requires_grad_(True), D.clone().requires_grad_(True)
            (doconv_compose(w, d, 1, (3, 3)) * upstream).sum().backward()
            grads.append((w.grad, d.grad))
    finally:
        torch.set_num_threads(previous_threads)
    # gW is computed row by row (bitwise the same); gD sums per-worker partials
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-4)


@needs_ext
def test_fused_non_contiguous_operands(fused_on):
    W, D = operands(8, 6, 1)
    W_t = W.transpose(0, 1).contiguous().transpose(0, 1)  # same values, strided storage
    assert not W_t.is_contiguous()
    torch.testing.assert_close(doconv_compose(W_t, D, 1, (3, 3)),
                               compose_with_matmul(W, D, 1, (3, 3)), rtol=0, atol=1e-12)


@needs_ext
def test_kernel_rejects_bad_operands():
    W, D = operands(8, 6, 1, dtype=torch.float32)
    with pytest.raises(RuntimeError, match='D_mul = 9'):
        compose_module._ext.doconv_compose_forward(W[:, :, :4].contiguous(), D[:, :, :4].contiguous(), 1)
    with pytest.raises(RuntimeError, match='float32 or both float64'):
        compose_module._ext.doconv_compose_forward(W, D.double(), 1)
    with pytest.raises(RuntimeError, match='groups=4'):
        compose_module._ext.doconv_compose_forward(W, D, 4)


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit.trace is deprecated, still used
@pytest.mark.parametrize('case', ['five_by_five', 'd_mul_over_taps', 'bfloat16', 'disabled', 'tracing'])
def test_dispatch_falls_back_to_matmul(fused_on, case):
    W, D = operands(8, 6, 1, dtype=torch.float32)
    if case == 'five_by_five':
        W, D = operands(8, 6, 1, dtype=torch.float32, taps=25, d_mul=25)
    elif case == 'd_mul_over_taps':
        W, D = operands(8, 6, 1, dtype=torch.float32, d_mul=12)
    elif case == 'bfloat16':
        W, D = W.bfloat16(), D.bfloat16()
    elif case == 'disabled':
        set_fused_compose(False)
    if case == 'tracing':
        seen = []

        def fn(w):
            seen.append(uses_fused_compose(w, D))
            return doconv_compose(w, D, 1, (3, 3))

        torch.jit.trace(fn, (W,), check_trace=False)
        assert seen == [False]
        return
    assert not uses_fused_compose(W, D)
    taps = D.shape[1]
    kernel_size = (5, 5) if taps == 25 else (3, 3)
    out = doconv_compose(W, D, 1, kernel_size)
    ref = naive_compose(W.double(), D.double(), 1).view_as(out)
    tol = 2e-2 if W.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_set_fused_compose_returns_previous_setting():
    previous = set_fused_compose(False)
    try:
        assert not fused_compose_available()
        assert set_fused_compose(True) is False
        assert fused_compose_available() == (compose_module._ext is not None)
    finally:
        set_fused_compose(previous)


@needs_ext
@pytest.mark.parametrize('groups', [1, 4])
def test_doconv_training_step_same_with_and_without_fused(fused_on, groups):
    torch.manual_seed(0)
    layer = DOConv(8, 8, 3, padding=1, groups=groups).double()
    with torch.no_grad():
        layer.D.normal_(0, 0.1)
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    results = []
    for fused in (True, False):
        set_fused_compose(fused)
        layer.zero_grad()
        out = layer(x)
        out.square().mean().backward()
        results.append((out.detach(), layer.W.grad.clone(), layer.D.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_missing_compiled_op_is_reported_once(monkeypatch):
    """A wheel built without the op (or a failed compile) uses the PyTorch
    composition and says so once per process, with the same result."""
    import warnings
    monkeypatch.setattr(compose_module, '_ext', None)
    monkeypatch.setattr(compose_module, '_EXT_ERROR', 'No module named mm_efficientconv._ext')
    monkeypatch.setattr(compose_module, '_fused_enabled', True)
    monkeypatch.setattr(compose_module, '_missing_ext_reported', False)
    W, D = operands(8, 6, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first = doconv_compose(W, D, 1, (3, 3))
        doconv_compose(W, D, 1, (3, 3))
    reports = [w for w in caught if 'mm_efficientconv._ext' in str(w.message)]
    assert len(reports) == 1 and issubclass(reports[0].category, RuntimeWarning)
    assert torch.equal(first, compose_with_matmul(W, D, 1, (3, 3)))
    # MMEFF_WITH_OPS=0 (the op deliberately off) is not reported
    monkeypatch.setattr(compose_module, '_fused_enabled', False)
    monkeypatch.setattr(compose_module, '_missing_ext_reported', False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        doconv_compose(W, D, 1, (3, 3))
    assert not [w for w in caught if 'mm_efficientconv._ext' in str(w.message)]


# ------------------------------------------------- the residual form (D' without I)
@pytest.mark.parametrize('taps,d_mul,kernel_size', [(9, 9, (3, 3)), (9, 12, (3, 3)),
                                                    (25, 25, (5, 5)), (3, 5, (1, 3))])
def test_residual_form_equals_the_paper_composition(taps, d_mul, kernel_size):
    W, D_prime = operands(7, 5, 1, taps=taps, d_mul=d_mul)
    eye = torch.eye(taps, d_mul, dtype=torch.float64)
    want = naive_compose(W, D_prime + eye, 1).view(7, 5, *kernel_size)
    torch.testing.assert_close(compose_residual(W, D_prime, kernel_size), want,
                               rtol=0, atol=1e-12)
    W.requires_grad_(True)
    D_prime.requires_grad_(True)
    for allow_view in (False, True):
        fn = lambda w, d: compose_residual(w, d, kernel_size, allow_view)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (W, D_prime))
        assert torch.autograd.gradgradcheck(fn, (W, D_prime))


def test_residual_form_is_a_view_only_for_the_convolution():
    W, D_prime = operands(6, 4, 1)
    W.requires_grad_(True)
    assert not compose_residual(W, D_prime, (3, 3), allow_view=True).is_contiguous()
    assert compose_residual(W, D_prime, (3, 3)).is_contiguous()
    with torch.no_grad():
        assert compose_residual(W, D_prime, (3, 3), allow_view=True).is_contiguous()
    # the layer: `weight` is contiguous, as a stock conv's (callers .view() it)
    previous = set_fused_compose(False)
    try:
        layer = DOConv(4, 6, 3, padding=1)
        assert layer.weight.is_contiguous() and layer.weight.view(6, -1).shape == (6, 36)
        assert layer.compute_weight().is_contiguous()
    finally:
        set_fused_compose(previous)


@pytest.mark.parametrize('case', ['dense', 'grouped', 'bfloat16', 'd_mul_over_taps'])
def test_doconv_kernel_paths_agree(fused_on, case):
    """Whichever path :func:`doconv_kernel` takes, the kernel is the paper's."""
    groups, d_mul, dtype = {'dense': (1, 9, torch.float32), 'grouped': (3, 9, torch.float32),
                            'bfloat16': (1, 9, torch.bfloat16),
                            'd_mul_over_taps': (1, 11, torch.float32)}[case]
    W, D_prime = operands(6, 6, groups, dtype=torch.float64, d_mul=d_mul)
    eye = torch.eye(9, d_mul, dtype=torch.float64)
    want = naive_compose(W, D_prime + eye, groups).view(6, 6 // groups, 3, 3)
    got = doconv_kernel(W.to(dtype), D_prime.to(dtype), eye.to(dtype), groups, (3, 3))
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
