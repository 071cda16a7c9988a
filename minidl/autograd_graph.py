"""The autograd graph as Graphviz DOT text, and DOT text rendered to a picture.

``graph`` returns the DOT text (https://graphviz.org/doc/info/lang.html) of the
graph that produced a tensor: one node per Function (what ``backward`` will call)
and one per tensor (shape and dtype; parameters by name). Rendering the text into
a picture needs the Graphviz ``dot`` program, a system package, not a Python one.
``minidl.viz`` offers both beside its pictures of a model's layers.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .autograd import Tensor, graph_key
from .checkpoint import atomic_write

FORMATS = ("png", "svg")
GRAPHVIZ_HINT = ("install Graphviz, which provides it (Debian/Ubuntu: apt-get install graphviz; macOS: brew "
                 "install graphviz; conda: conda install -c conda-forge graphviz; Windows: winget install "
                 "graphviz), or call graph() without path to get only the DOT text")


def pair_text(pair) -> str:
    """(3, 3) as "3", (3, 1) as "3x1"."""
    return f"{pair[0]}x{pair[1]}" if pair[0] != pair[1] else f"{pair[0]}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_label(shape, dtype, name=None) -> str:
    shape_text = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    return (f"{name}\n" if name else "") + f"{shape_text} {dtype}"


def _function_label(fn) -> str:
    """The Function (with the fast path that ran, if one did) and the few settings a reader needs.

    E.g. "Conv2d [im2col]\nkernel 3, groups 2" or "BatchNorm\nevaluation".
    """
    impl = getattr(fn, "impl", fn)   # a FastPath's settings live on its kernel
    details = []
    for attr in ("kernel", "stride", "groups"):
        value = getattr(impl, attr, None)
        if value is not None and value not in (1, (1, 1)):
            details.append(f"{attr} {pair_text(value) if isinstance(value, tuple) else value}")
    training = getattr(impl, "training", None)
    if training is not None:
        details.append("training" if training else "evaluation")
    return getattr(fn, "label", type(fn).__name__) + ("\n" + ", ".join(details) if details else "")


def graph(tensor, params=None, path=None) -> str:
    """The DOT text of the autograd graph that produced ``tensor``; rendered to ``path`` if given.

    Call it after the forward pass and before ``backward`` (which frees the graph
    unless ``retain_graph=True``).

    Args:
        tensor: a Tensor, usually a loss.
        params: names for leaf tensors, e.g. ``model.named_parameters()`` (pairs or a
            dict name -> Tensor); leaves without a name show only shape and dtype.
        path: optional .svg or .png to render with Graphviz's ``dot`` program.

    Returns:
        the DOT text. Nodes: boxes for Functions (in the order backward meets them),
        ellipses for tensors (blue: leaves that require grad, i.e. what backward
        fills ``.grad`` of; grey: constants; the result in bold).
    Raises:
        RuntimeError when the graph was already freed by backward; RuntimeError
        saying what to install when ``path`` is given and ``dot`` is missing.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: expected a minidl Tensor, got {type(tensor).__name__}")
    names = {id(t): name for name, t in (params.items() if isinstance(params, dict) else (params or ()))}
    lines = ["digraph autograd {",
             '  graph [rankdir=TB, fontname="Helvetica", labelloc=t, label="data flows down; backward walks '
             'the boxes bottom up and fills .grad of the blue leaves"];',
             '  node [fontname="Helvetica", fontsize=10];', '  edge [arrowsize=0.7];']
    ids = {}

    def node_id(key) -> str:
        if key not in ids:
            ids[key] = f"n{len(ids)}"
        return ids[key]

    def add_tensor(t, style) -> tuple:
        """(node id, whether the node is new)."""
        key = ("t",) + graph_key(t)   # one node per tensor, however many functions read it
        new = key not in ids
        if new:
            label = _tensor_label(t.shape, t.dtype, names.get(id(t)) or t.name)
            lines.append(f"  {node_id(key)} [label={_quote(label)}, shape=ellipse, {style}];")
        return ids[key], new

    root, _ = add_tensor(tensor, "style=bold")
    if tensor.creator is None:
        lines.append("}")
        return _finish("\n".join(lines) + "\n", path)
    lines.append(f"  {node_id(('f', id(tensor.creator)))} -> {root};")
    stack, seen = [tensor.creator], set()
    while stack:  # iterative depth-first walk from the output back to the leaves
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if getattr(fn, "freed", False) or not hasattr(fn, "inputs"):
            raise RuntimeError(f"graph: the graph through {type(fn).__name__} was already freed by backward; "
                               "draw it before calling backward, or call backward(retain_graph=True)")
        fid = node_id(("f", id(fn)))
        lines.append(f"  {fid} [label={_quote(_function_label(fn))}, shape=box, style=\"rounded,filled\", "
                     'fillcolor="#fdd0a2"];')
        for t in fn.inputs:
            if t.creator is None:
                style = ('style=filled, fillcolor="#c6dbef"' if t.requires_grad
                         else 'style=filled, fillcolor="#eeeeee", fontcolor="#555555"')
                lines.append(f"  {add_tensor(t, style)[0]} -> {fid};")
            else:
                tid, new = add_tensor(t, "style=solid")
                if new:  # the edge from its creator, once however many functions consume it
                    lines.append(f"  {node_id(('f', id(t.creator)))} -> {tid};")
                lines.append(f"  {tid} -> {fid};")
                stack.append(t.creator)
    lines.append("}")
    return _finish("\n".join(lines) + "\n", path)


def _finish(dot_text: str, path) -> str:
    if path is not None:
        render_dot(dot_text, path)
    return dot_text


def render_dot(dot_text: str, path) -> Path:
    """Render DOT text to ``path`` (.svg or .png) with Graphviz's ``dot`` program.

    Raises:
        RuntimeError saying what to install when ``dot`` is not on PATH, or with
        Graphviz's own message when it fails.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"render_dot: the file must end in .png or .svg, got {str(path)!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(f"render_dot: Graphviz's 'dot' program was not found on PATH; {GRAPHVIZ_HINT}")
    done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=120,
                          env=dict(os.environ, SOURCE_DATE_EPOCH="0"))
    if done.returncode != 0:
        raise RuntimeError(f"render_dot: dot failed: {done.stderr.decode(errors='replace').strip()}")
    atomic_write(path, lambda f: f.write(done.stdout))
    return path
