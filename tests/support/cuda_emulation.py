"""Run minidl's CUDA kernels on the CPU: the same source text, compiled with g++.

A grid-stride CUDA kernel is plain C++ once a few CUDA words exist, so this
harness checks the kernels' index math without a GPU:

* ``PRELUDE`` defines ``__global__``/``__device__`` away and the launch coordinates
  (``blockIdx``, ``threadIdx``, ``blockDim``, ``gridDim``) as globals. It includes
  no header, like NVRTC: a kernel that leans on a host header (``INFINITY``,
  ``std::min``) fails to compile here as it would there.
* For each kernel a generated ``extern "C"`` launcher runs the kernel body for every
  (block, thread) of the grid, one after another. That is a faithful schedule for
  minidl's kernels, which are gathers: no thread reads what another one writes.
* ``EmulatedKernel`` is called like a ``cupy.RawKernel``, ``kernel(grid, block,
  args)``, with NumPy arrays and NumPy scalars. It checks each argument against the
  parameter's C type (dtype, contiguity; scalars must be NumPy scalars of exactly
  the right type, as CuPy needs them), runs the kernel on guarded copies, and
  asserts afterwards that no guard cell changed. Guards and not-yet-written outputs
  hold a sentinel (NaN, or -1 for integers), so an out-of-bounds write fails at
  once, and an out-of-bounds read or a skipped output shows in the result.

``Emulator.kernel(source, name, options)`` has ``backend.raw_kernel``'s signature,
so tests can monkeypatch it in and drive minidl's real launch wrappers with NumPy.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np

PRELUDE = r"""// --- CUDA emulation prelude (tests/cuda_emulation.py) ---
struct emulated_dim3 { unsigned int x, y, z; };
static emulated_dim3 blockIdx, threadIdx, blockDim, gridDim;  // set by the launcher per emulated thread
#define __global__
#define __device__ static inline
#define __forceinline__ inline
// --- kernel source ---
"""

# C types a kernel parameter (after its typedefs are resolved) may have.
_C_DTYPES = {"float": np.float32, "double": np.float64, "signed char": np.int8, "short": np.int16,
             "int": np.int32, "long long": np.int64}
_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_TYPEDEF = re.compile(r"typedef\s+([\w ]+?)\s+(\w+)\s*;")
GUARD = 64  # sentinel cells on each side of every array


class Param(NamedTuple):
    name: str
    dtype: np.dtype
    pointer: bool
    const: bool


def parse_params(source: str, name: str) -> tuple[list[Param], str]:
    """The parameters of kernel ``name`` in ``source``, and their declaration text."""
    typedefs = {alias: ctype for ctype, alias in _TYPEDEF.findall(source)}
    for match in _SIGNATURE.finditer(source):
        if match.group(1) != name:
            continue
        params = []
        for text in match.group(2).split(","):
            tokens = text.replace("*", " * ").split()
            base = " ".join(t for t in tokens[:-1] if t not in ("const", "*", "__restrict__"))
            ctype = typedefs.get(base, base)
            if ctype not in _C_DTYPES:
                raise ValueError(f"parse_params: {name}: parameter {tokens[-1]} has unsupported type {base!r}")
            params.append(Param(tokens[-1], np.dtype(_C_DTYPES[ctype]), "*" in tokens, "const" in tokens))
        return params, match.group(2)
    raise ValueError(f'parse_params: no extern "C" __global__ void {name}(...) in the source')


def _sentinel(dtype: np.dtype):
    return dtype.type(np.nan) if dtype.kind == "f" else dtype.type(-1)


def _launcher(name: str, params: list[Param], declaration: str) -> str:
    call = ", ".join(p.name for p in params)
    return f"""
// --- generated launcher: every (block, thread) of the grid, one after another ---
extern "C" void emulated_launch(unsigned int grid, unsigned int block, {declaration}) {{
    // (the kernel's parameter names are taken, hence the emulated_ prefixes)
    gridDim.x = grid; gridDim.y = gridDim.z = 1;
    blockDim.x = block; blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    for (unsigned int emulated_b = 0; emulated_b < grid; ++emulated_b) {{
        for (unsigned int emulated_t = 0; emulated_t < block; ++emulated_t) {{
            blockIdx.x = emulated_b;
            threadIdx.x = emulated_t;
            {name}({call});
        }}
    }}
}}
"""


class EmulatedKernel:
    """One compiled kernel, called like a ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, library: ctypes.CDLL, name: str, params: list[Param], launches: list):
        self.name, self.params, self._launches = name, params, launches
        self._fn = library.emulated_launch
        self._fn.restype = None
        self._fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
            ctypes.c_void_p if p.pointer else np.ctypeslib.as_ctypes_type(p.dtype) for p in params]

    def _check(self, param: Param, arg) -> None:
        where = f"{self.name}: argument {param.name}"
        if param.pointer:
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where}: expected an array, got {type(arg).__name__}")
            if arg.dtype != param.dtype or not arg.flags.c_contiguous:
                raise TypeError(f"{where}: expected a contiguous {param.dtype} array, got "
                                f"{arg.dtype} (contiguous: {arg.flags.c_contiguous})")
        elif not isinstance(arg, np.generic) or arg.dtype != param.dtype:
            raise TypeError(f"{where}: expected a NumPy {param.dtype} scalar, got {type(arg).__name__} {arg!r}")

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: expected {len(self.params)} arguments, got {len(args)}")
        grid, block = int(grid[0]), int(block[0])
        if not (grid >= 1 and block >= 1):
            raise ValueError(f"{self.name}: invalid launch grid={grid} block={block}")
        # One guarded buffer per distinct array, so that in-place calls (y is x) stay in place.
        buffers: dict = {}
        for param, arg in zip(self.params, args):
            self._check(param, arg)
            if param.pointer:
                key = (arg.__array_interface__["data"][0], arg.nbytes)
                entry = buffers.setdefault(key, {"array": arg, "read": False, "written": False})
                entry["read" if param.const else "written"] = True
        keys = list(buffers)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if np.shares_memory(buffers[a]["array"], buffers[b]["array"]):
                    raise ValueError(f"{self.name}: two arguments partly overlap")
        for entry in buffers.values():
            array = entry["array"]
            guarded = np.full(array.size + 2 * GUARD, _sentinel(array.dtype), dtype=array.dtype)
            if entry["read"]:  # an output only is left at the sentinel: unwritten cells show
                guarded[GUARD:GUARD + array.size] = array.reshape(-1)
            entry["guarded"], entry["guards"] = guarded, guarded.copy()
        cargs = []
        for param, arg in zip(self.params, args):
            if param.pointer:
                guarded = buffers[(arg.__array_interface__["data"][0], arg.nbytes)]["guarded"]
                cargs.append(guarded.ctypes.data + GUARD * guarded.itemsize)
            else:
                cargs.append(arg.item())
        self._fn(grid, block, *cargs)
        self._launches.append((self.name, grid, block))
        for param, arg in zip(self.params, args):
            if not param.pointer:
                continue
            entry = buffers[(arg.__array_interface__["data"][0], arg.nbytes)]
            guarded, before = entry["guarded"], entry["guards"]
            for side in (slice(0, GUARD), slice(GUARD + arg.size, None)):
                if guarded[side].tobytes() != before[side].tobytes():
                    raise AssertionError(f"{self.name}: wrote outside argument {param.name} "
                                         f"({arg.size} elements)")
            if entry["written"]:
                arg.reshape(-1)[...] = guarded[GUARD:GUARD + arg.size]


class Emulator:
    """Compiles kernels with g++ (once per source and name) into ``workdir``."""

    def __init__(self, workdir: Path, compiler: str = "g++"):
        self.workdir, self.compiler = Path(workdir), compiler
        self.launches: list = []  # (name, grid, block) of every launch, for tests to inspect
        self._cache: dict = {}

    @staticmethod
    def available(compiler: str = "g++") -> bool:
        return shutil.which(compiler) is not None

    def kernel(self, source: str, name: str, options=()) -> EmulatedKernel:
        """Same signature as ``backend.raw_kernel``. ``--fmad=false`` is what g++ does here
        anyway (``-ffp-contract=off``), so no option changes the arithmetic."""
        key = (source, name)
        if key not in self._cache:
            params, declaration = parse_params(source, name)
            text = PRELUDE + source + _launcher(name, params, declaration)
            stem = f"{name}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"
            cpp, lib = self.workdir / f"{stem}.cpp", self.workdir / f"{stem}.so"
            cpp.write_text(text)
            done = subprocess.run([self.compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
                                   "-Wall", "-Wextra", "-Werror", "-o", str(lib), str(cpp)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise AssertionError(f"g++ could not compile kernel {name} ({cpp}):\n{done.stderr}")
            self._cache[key] = EmulatedKernel(ctypes.CDLL(str(lib)), name, params, self.launches)
        return self._cache[key]
