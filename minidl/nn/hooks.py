"""Forward hooks: code that runs around a module's ``forward``, as PyTorch's.

A pre-hook sees (and may replace) a module's inputs before ``forward``; a hook sees
(and may replace) its output after. They are how one reads a network's inner
activations without editing it: feature maps for a picture, statistics per layer,
features for another model:

    features = {}
    handle = model.layer3.register_forward_hook(lambda m, args, out: features.update(layer3=out))
    model(images)            # features["layer3"] is layer3's output
    handle.remove()

``Module.__call__`` runs them (``call_with_hooks``); a module without hooks calls
``forward`` directly, so hooks cost nothing where there are none.
"""
from __future__ import annotations

from ..autograd import HookHandle


def _hooks(module, kind: str) -> list:
    """The module's list of (hook, with_kwargs) entries of ``kind``, made on first use."""
    hooks = module.__dict__.get(kind)
    if hooks is None:
        hooks = []
        object.__setattr__(module, kind, hooks)   # not a parameter, buffer or child
    return hooks


def _register(module, kind: str, method: str, hook, prepend: bool, with_kwargs: bool) -> HookHandle:
    if not callable(hook):
        raise ValueError(f"{type(module).__name__}.{method}: hook must be callable, got {type(hook).__name__}")
    hooks, entry = _hooks(module, kind), (hook, bool(with_kwargs))
    hooks.insert(0, entry) if prepend else hooks.append(entry)
    return HookHandle(hooks, entry)


class ForwardHooks:
    """``register_forward_pre_hook`` and ``register_forward_hook``, mixed into ``Module``."""

    def register_forward_pre_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False) -> HookHandle:
        """Call ``hook(module, args)`` before every ``forward``, as PyTorch's.

        Args:
            hook: returns None (inputs unchanged) or the new positional inputs (a tuple,
                or one value). With ``with_kwargs``: ``hook(module, args, kwargs)``
                returning None or a new ``(args, kwargs)`` pair.
            prepend: run before the hooks registered earlier instead of after them.
        Returns:
            a handle whose ``remove()`` unregisters the hook.
        """
        return _register(self, "_forward_pre_hooks", "register_forward_pre_hook", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> HookHandle:
        """Call ``hook(module, args, output)`` after every ``forward``, as PyTorch's.

        Args:
            hook: returns None (output unchanged) or a new output. With ``with_kwargs``:
                ``hook(module, args, kwargs, output)``.
            prepend: run before the hooks registered earlier instead of after them.
            always_call: PyTorch's option to run the hook when forward raises; not
                offered (refused with a clear error): a failed forward has no output here.
        Returns:
            a handle whose ``remove()`` unregisters the hook.
        """
        if always_call:
            raise ValueError(f"{type(self).__name__}.register_forward_hook: always_call=True is not supported "
                             "(hooks run only after a forward that returned)")
        return _register(self, "_forward_hooks", "register_forward_hook", hook, prepend, with_kwargs)


def has_forward_hooks(module) -> bool:
    """Whether ``module`` has a forward hook or pre-hook registered now."""
    return bool(module.__dict__.get("_forward_pre_hooks") or module.__dict__.get("_forward_hooks"))


def call_with_hooks(module, args: tuple, kwargs: dict):
    """``module.forward(*args, **kwargs)`` with its pre-hooks before and its hooks after."""
    for hook, with_kwargs in list(module.__dict__.get("_forward_pre_hooks") or ()):
        if with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise ValueError(f"{type(module).__name__}: a forward pre-hook with kwargs must return None "
                                     f"or (args, kwargs), got {type(result).__name__}")
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    output = module.forward(*args, **kwargs)
    for hook, with_kwargs in list(module.__dict__.get("_forward_hooks") or ()):
        result = hook(module, args, kwargs, output) if with_kwargs else hook(module, args, output)
        if result is not None:
            output = result
    return output
