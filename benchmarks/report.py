"""The text tables of bench_models.py: speed, memory, GEMM-peak fractions, and the per-layer breakdown."""
from __future__ import annotations

from breakdown import CATEGORIES, by_prefix
from common import format_table

FRAMEWORKS = ("minidl", "minidl_fused", "torch", "onnxruntime")
NAMES = {"minidl": "minidl", "minidl_fused": "minidl fused", "torch": "PyTorch", "onnxruntime": "ONNX Runtime"}
CATEGORY_NAMES = {"gemm": "GEMM", "transforms": "transforms/copies", "elementwise": "element-wise",
                  "python": "Python"}
PHASES = {"train": "train step", "infer": "inference (plain)", "infer_fused": "inference (fused)"}


def _mib(memory: dict, key: str):
    value = memory.get(key)
    if value is None:
        return memory.get("error", ["-"])[0] if key == "train_peak_bytes" and "error" in memory else float("nan")
    return value / 2**20


def summary(payload: dict) -> str:
    """Images/s, peak memory and GEMM-peak fractions per framework, then the ratios and the yardstick."""
    speed, memory = payload["speed"], payload.get("memory", {})
    fraction = payload.get("fraction_of_gemm_peak", {})
    nan = float("nan")
    rows = []
    for fw in FRAMEWORKS:
        if fw not in speed:
            continue
        s, m, f = speed[fw], memory.get(fw, {}), fraction.get(fw, {})
        rows.append([NAMES[fw], s.get("train_images_per_s", nan), s["infer_images_per_s"],
                     _mib(m, "train_peak_bytes"), _mib(m, "infer_peak_bytes"), f.get("train", nan),
                     f.get("infer", nan)])
    lines = [format_table(["framework", "train img/s", "infer img/s", "train peak MiB", "infer peak MiB",
                           "train/GEMM peak", "infer/GEMM peak"], rows)]
    ratios = payload.get("ratios", {})
    if ratios:
        lines.append("speed ratios (> 1: the first is faster; ratio of medians, median of per-round ratios):")
        for pair, phases in ratios.items():
            a, b = pair.split("/")
            text = ", ".join(f"{phase} {r['of_medians']:.2f}x ({r['paired']:.2f}x)" for phase, r in phases.items())
            lines.append(f"  {NAMES[a]} / {NAMES[b]}: {text}")
    mem = []
    for a, b, phase in (("minidl", "torch", "train"), ("minidl", "torch", "infer"),
                        ("minidl_fused", "onnxruntime", "infer"), ("minidl", "onnxruntime", "infer")):
        x, y = memory.get(a, {}).get(f"{phase}_peak_bytes"), memory.get(b, {}).get(f"{phase}_peak_bytes")
        if x is not None and y:
            mem.append(f"{NAMES[a]}/{NAMES[b]} {phase} {x / y:.2f}x")
    if mem:
        lines.append("peak memory: " + ", ".join(mem))
    peaks = payload.get("gemm_peak")
    if peaks:
        parts = [f"{kind} {v['gflops']:.0f} GFLOP/s ({v['threads']} threads)" if "gflops" in v else
                 f"{kind} failed: {v.get('error')}" for kind, v in peaks.items() if isinstance(v, dict)]
        size = next((v["size"] for v in peaks.values() if isinstance(v, dict) and "size" in v), "?")
        lines.append(f"float32 GEMM {size}^3: " + ", ".join(parts)
                     + (f"; peak {peaks['peak_gflops']:.0f} GFLOP/s ({peaks['peak_from']})" if "peak_gflops" in peaks
                        else ""))
    flops = payload.get("flops")
    if flops:
        lines.append(f"dense-equivalent FLOPs per image: train step {flops['train_per_image'] / 1e9:.3f} GFLOP, "
                     f"inference {flops['infer_per_image'] / 1e9:.3f} GFLOP ({flops['counted_by']})")
    fusion = payload.get("fusion")
    if fusion:
        lines.append("fused model: " + _fusion_text(fusion))
    for note in payload.get("notes", []):
        lines.append("note: " + note)
    return "\n".join(lines)


def _fusion_text(fusion: dict) -> str:
    """Which layer types fuse_for_inference added and removed (e.g. "+5 FusedConv2d, -5 BatchNorm2d")."""
    plain, fused = fusion["plain"], fusion["fused"]
    changes = [(name, fused.get(name, 0) - plain.get(name, 0)) for name in sorted(set(plain) | set(fused))]
    text = ", ".join(f"{d:+d} {name}" for name, d in changes if d)
    return (text or "unchanged (no layer was rewritten)") + f"; {sum(fused.values())} layers"


def _category_line(name: str, phase: dict, steps: int) -> str:
    step = phase["step_s"]
    parts = ", ".join(f"{CATEGORY_NAMES[c]} {100 * phase['categories'][c] / step:.0f}% "
                      f"({1e3 * phase['categories'][c]:.1f} ms)" for c in CATEGORIES)
    return (f"{name}: {1e3 * step:.1f} ms profiled ({1e3 * phase['unprofiled_step_s']:.1f} ms unprofiled, "
            f"{steps} steps): {parts}")


def _rows_table(rows, step: float, top: int) -> str:
    table = [[r["layer"], r["pass"]] + [1e3 * r[c] for c in CATEGORIES] + [1e3 * r["total"], 100 * r["total"] / step]
             for r in rows[:top]]
    return format_table(["layer", "pass"] + [f"{CATEGORY_NAMES[c]} ms" for c in CATEGORIES] + ["total ms", "% step"],
                        table)


def _ops_table(ops, step: float, top: int) -> str:
    table = [[o["op"], o["pass"], o["calls"]] + [1e3 * o[c] for c in CATEGORIES[:3]]
             + [1e3 * o["total"], 100 * o["total"] / step] for o in ops[:top]]
    return format_table(["kernel", "pass", "calls"] + [f"{CATEGORY_NAMES[c]} ms" for c in CATEGORIES[:3]]
                        + ["total ms", "% step"], table)


def breakdown(data: dict, top: int = 10) -> str:
    """The breakdown child's result as text: categories of each phase, then the largest items."""
    if "phases" not in data:
        return f"breakdown failed: {data.get('error')}"
    phases, steps = data["phases"], data["steps"]
    lines = ["\nwhere minidl's time goes (benchmarks/breakdown.py; per step):"]
    lines += ["  " + _category_line(PHASES[p], phases[p], steps) for p in PHASES if p in phases]
    train = phases.get("train")
    if train:
        lines.append(f"\ntrain step, the {top} largest (layer, pass) items:")
        lines.append(_rows_table(train["rows"], train["step_s"], top))
        if any("." in r["layer"] for r in train["rows"]):
            lines.append("\ntrain step by stage (layers summed over the first part of their names):")
            lines.append(_rows_table(by_prefix(train["rows"]), train["step_s"], top))
        lines.append(f"\ntrain step, the {top} largest kernels (summed over layers):")
        lines.append(_ops_table(train["ops"], train["step_s"], top))
    fused = phases.get("infer_fused")
    if fused:
        lines.append(f"\nfused inference, the {top} largest kernels:")
        lines.append(_ops_table(fused["ops"], fused["step_s"], top))
    return "\n".join(lines)
