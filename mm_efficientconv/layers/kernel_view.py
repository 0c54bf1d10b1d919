# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""``layer.weight`` of a factorised layer: the composed dense kernel, and
in-place writes to it reach the layer's own parameters.

mmengine's initialisers and mmcv's ``*_init`` helpers initialise a conv by
writing ``module.weight`` in place (``nn.init.xavier_uniform_(module.weight)``),
and users copy kernels with ``layer.weight.data.copy_(...)``. For a factorised
layer ``weight`` is computed from other parameters, so such writes would land
in a temporary and vanish. :class:`KernelView` is that temporary as a tensor
subclass that remembers its layer: after every operation that modified it in
place (directly, through ``.data``, ``.detach()`` or a view of it), the whole
written kernel is handed to the layer's ``_write_kernel(kernel)``, which stores
it in the layer's parametrisation (see each layer's docstring for the rule).
Everything else behaves as the plain tensor: results of out-of-place
operations are ordinary tensors and autograd flows through the view as
through the composed kernel.
"""
import weakref

import torch


def _views_in(value, found: list) -> list:
    """The ``KernelView`` objects in (nested lists / tuples / dicts of)
    ``value``."""
    if isinstance(value, KernelView):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _views_in(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _views_in(item, found)
    return found


class KernelView(torch.Tensor):
    """A composed kernel whose in-place writes are stored into its layer.

    Build with :func:`kernel_view`; not meant to be constructed directly.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        views = _views_in((args, kwargs), [])
        with torch._C.DisableTorchFunctionSubclass():
            versions = [t._version for t in views]
            out = func(*args, **kwargs)
            written = [t for t, v in zip(views, versions) if t._version != v]
        seen = set()
        for t in written:
            root = t.__dict__.get('_kernel_root')
            if root is not None and id(root) not in seen:
                seen.add(id(root))
                t._commit()
        if views:
            out = _wrap_aliases(out, views[0])
        return out

    def _commit(self) -> None:
        owner = self.__dict__['_kernel_owner']()
        if owner is None:
            return
        root = self.__dict__['_kernel_root']
        with torch._C.DisableTorchFunctionSubclass(), torch.no_grad():
            kernel = root.detach().clone()
        owner._write_kernel(kernel)


def _wrap_aliases(out, source: KernelView):
    """Outputs that share the kernel's memory (``.data``, ``.detach()``,
    views, the object itself) stay linked to the layer; others are plain."""
    root = source.__dict__['_kernel_root']
    if isinstance(out, torch.Tensor):
        if isinstance(out, KernelView):
            return out
        with torch._C.DisableTorchFunctionSubclass():
            try:
                shares = (out.layout == torch.strided and out.device == root.device
                          and out.untyped_storage().data_ptr()
                          == root.untyped_storage().data_ptr() and root.numel() > 0)
            except (RuntimeError, NotImplementedError):
                shares = False
            if not shares:
                return out
            view = out.as_subclass(KernelView)
        view.__dict__['_kernel_owner'] = source.__dict__['_kernel_owner']
        view.__dict__['_kernel_root'] = root
        return view
    if isinstance(out, (tuple, list)):
        return type(out)(_wrap_aliases(o, source) for o in out)
    return out


def kernel_view(owner: torch.nn.Module, kernel: torch.Tensor) -> KernelView:
    """Wraps ``owner``'s freshly composed ``kernel`` so that in-place writes
    to it (or to its ``.data`` / views) call ``owner._write_kernel``."""
    with torch._C.DisableTorchFunctionSubclass():
        view = kernel.as_subclass(KernelView)
        root = kernel.detach()
    view.__dict__['_kernel_owner'] = weakref.ref(owner)
    view.__dict__['_kernel_root'] = root
    return view
