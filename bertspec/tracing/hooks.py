"""Hooks held for a while: how bertspec watches or changes a forward pass without editing transformers.

Every hook is registered with the call's keyword arguments (``with_kwargs=True``),
since transformers passes most tensors by keyword: a pre-hook is called as
``pre(module, args, kwargs)``, a forward hook as ``post(module, args, kwargs, output)``.
"""

from contextlib import contextmanager


def register(module, *, pre=None, post=None) -> list:
    """A forward pre-hook and/or forward hook on module; their handles."""
    handles = []
    if pre is not None:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    if post is not None:
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    return handles


def remove(handles: list) -> None:
    """Remove every hook of handles, and empty the list."""
    for handle in handles:
        handle.remove()
    handles.clear()


@contextmanager
def attached(*modules, pre=None, post=None):
    """The same hooks on every module for the with block, removed however the block ends (a module listed twice is hooked once)."""
    handles = [handle for module in {id(m): m for m in modules}.values() for handle in register(module, pre=pre, post=post)]
    try:
        yield
    finally:
        remove(handles)
