"""Do bitsandbytes' CUDA kernels give the codes that ``flipguard.schemes`` predicts?

``flipguard.schemes`` is exact for bitsandbytes' CPU kernels (tests/unit/schemes). DESIGN.md §3
says the CUDA kernels differ at the last bit, which is why attack and defend keep a safe depth
from every wall. This script measures that, on a machine with a CUDA GPU, in three parts:

1. kernels: random weights (fp32/fp16/bf16) and exhaustive sweeps over every 16-bit value,
   quantized by bitsandbytes on the GPU (``quantize_4bit``, ``int8_vectorwise_quant``: what
   ``Params4bit``/``Int8Params`` call when a model is loaded onto CUDA) against the CPU
   prediction. Every disagreeing weight is reported with its wall distance in cell widths;
   the defense's ``SAFE_DEPTH`` must exceed the largest one.
2. checkpoints (``--models``): each model directory loaded through transformers +
   ``BitsAndBytesConfig`` onto the GPU (``flipguard.attack.verify``); every quantized weight's
   loaded code against the CPU prediction. With ``--pairs SRC:DEFENDED``, the weights whose
   predicted code the defense changed are checked separately (they must all agree: that is
   the safe depth at work) and the codes of SRC and DEFENDED are compared on the GPU.
3. behaviour (``--behaviour``): ``flipguard evaluate`` on the GPU for each model, scheme and
   scenario given as ``DIR=scheme,scheme`` (content injection) or ``DIR=scheme,scheme@SCENARIO``.

    python benchmarks/cuda_agreement.py --out results/cuda_agreement \\
        --models DIR ... --pairs SRC:DEFENDED ... --behaviour DIR=fp,nf4 ...

``--device cpu`` runs the same comparisons against the CPU kernels (a self-check: every count
must be 0).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from flipguard.defend.flip import SAFE_DEPTH
from flipguard.schemes import get_scheme, scheme_names

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# -- part 1: kernels ------------------------------------------------------------------------------
def device_quantize(name: str, w: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax) bitsandbytes computes for ``w`` on ``device``, back on the CPU, one code
    per weight (4-bit codes unpacked, even element in the high nibble)."""
    import bitsandbytes.functional as F

    wd = w.to(device)
    if name == "int8":
        codes, scb, _ = F.int8_vectorwise_quant(wd.to(torch.float16))
        return codes.cpu(), scb.float().cpu()
    packed, state = F.quantize_4bit(wd, blocksize=64, quant_type=name)
    packed = packed.reshape(-1).cpu()
    codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[: w.numel()]
    return codes.view(w.shape), state.absmax.float().cpu()


def compare_tensor(name: str, w: torch.Tensor, device: str) -> dict:
    """Disagreements between the CPU prediction and ``device``'s kernel for one 2-D tensor."""
    scheme = get_scheme(name)
    predicted, absmax = scheme.codes(w), scheme.absmax(w)
    got, got_absmax = device_quantize(name, w, device)
    if name == "int8":
        level_diff = predicted.to(torch.int16) != got.to(torch.int16)
        code_only = torch.zeros((), dtype=torch.int64)
    else:  # compare levels: FP4 has two codes for zero
        table = scheme.table
        level_diff = table[predicted.long()] != table[got.long()]
        code_only = ((predicted.long() != got.long()) & ~level_diff).sum()
    out = {
        "weights": w.numel(),
        "mismatches": int(level_diff.sum()),
        "code_only": int(code_only),  # same level, other code (FP4's -0 / +0)
        "absmax_mismatches": int((absmax.float() != got_absmax.view(absmax.shape)).sum()),
    }
    if out["mismatches"]:
        d = scheme.wall_distance(w)[level_diff]
        out["wall_distance_max"] = float(d.nan_to_num(1.0).max())
        out["wall_distance_quantiles"] = [float(q) for q in d.nan_to_num(1.0).quantile(
            torch.tensor([0.5, 0.99]))]
        out["one_step"] = int(((predicted.long() - got.long()).abs() == 1).logical_and(level_diff).sum()) \
            if name == "int8" else None
    return out


def sweep(m: float, dtype: torch.dtype, name: str) -> torch.Tensor:
    """Every ``dtype`` value in [-m, m] laid out so each group has absmax m (see the unit tests)."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    every = every[torch.isfinite(every.float()) & (every.float().abs() <= m)]
    m_exact = every.float().abs().max().to(dtype)
    if name == "int8":
        row = torch.cat([every, m_exact.view(1)])
        return torch.stack([row, -row])
    per = 63
    pad = (-every.numel()) % per
    body = torch.cat([every, torch.zeros(pad, dtype=dtype)]).view(-1, per)
    head = torch.full((body.shape[0], 1), m_exact.item(), dtype=dtype)
    blocks = torch.cat([head, body], dim=1).reshape(-1)
    return torch.cat([blocks, every[:37]]).view(1, -1)  # a partial last block too


def kernel_part(device: str, size: int, seed: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(size, size + 7, generator=gen) * 0.02  # odd width: blocks span rows
    base[0, :5] = 0.0  # zeros: FP4's sign-of-zero corner
    for name in scheme_names():
        for dname, dtype in DTYPES.items():
            start = time.perf_counter()
            r = compare_tensor(name, base.to(dtype), device)
            rows.append({"part": "random", "scheme": name, "dtype": dname, "shape": list(base.shape),
                         **r, "seconds": round(time.perf_counter() - start, 2)})
        for dname in ("float16", "bfloat16"):
            for m in (1.0, 0.7, 0.0123, 3.3):
                w = sweep(m, DTYPES[dname], name)
                rows.append({"part": "exhaustive", "scheme": name, "dtype": dname, "m": m,
                             "shape": list(w.shape), **compare_tensor(name, w, device)})
    return rows


# -- part 2: checkpoints --------------------------------------------------------------------------
def checkpoint_part(models: list[str], device: str) -> list[dict]:
    from flipguard.attack.verify import predicted_targets, verify_checkpoint

    rows = []
    for path in models:
        counts = verify_checkpoint(path, predicted_targets(path), device=device)
        for name, c in counts.items():
            rows.append({"model": path, "scheme": name, **{k: c[k] for k in
                        ("tensors", "weights", "code_mismatches", "scale_mismatches", "seconds")},
                         "missing": len(c["missing"])})
    return rows


def pair_part(pairs: list[str], device: str) -> list[dict]:
    """Weights the defense moved to another cell: do the GPU kernels put them there too?"""
    from flipguard.checkpoint import open_checkpoint
    from flipguard.checkpoint.targets import quantizable_tensors

    rows = []
    for pair in pairs:
        src, dst = pair.split(":")
        a, b = open_checkpoint(src), open_checkpoint(dst)
        for name in scheme_names():
            scheme = get_scheme(name)
            tot = {"flipped_cpu": 0, "flipped_gpu_agree": 0, "changed_gpu": 0, "weights": 0,
                   "min_depth_flipped": 1.0}
            for t in quantizable_tensors(b):
                wa, wb = a.get(t.tensor_name), b.get(t.tensor_name)
                if t.transposed:
                    wa, wb = wa.t().contiguous(), wb.t().contiguous()
                pa, pb = scheme.codes(wa), scheme.codes(wb)
                ga, _ = device_quantize(name, wa, device)
                gb, _ = device_quantize(name, wb, device)
                if name == "int8":
                    lv = lambda c: c.to(torch.int16)  # noqa: E731
                else:
                    lv = lambda c: scheme.table[c.long()]  # noqa: E731
                moved = lv(pa) != lv(pb)  # the defense changed this weight's level (CPU)
                tot["weights"] += wb.numel()
                tot["flipped_cpu"] += int(moved.sum())
                tot["flipped_gpu_agree"] += int((moved & (lv(gb) == lv(pb))).sum())
                tot["changed_gpu"] += int((lv(ga) != lv(gb)).sum())
                if moved.any():
                    d = scheme.wall_distance(wb)[moved].nan_to_num(1.0)
                    tot["min_depth_flipped"] = min(tot["min_depth_flipped"], float(d.min()))
            rows.append({"source": src, "defended": dst, "scheme": name, **tot})
    return rows


# -- part 3: behaviour ----------------------------------------------------------------------------
def behaviour_part(specs: list[str], device: str, n: int) -> list[dict]:
    from flipguard.evaluate.harness import evaluate

    rows = []
    for spec in specs:
        path, schemes = spec.split("=")
        schemes, _, scenario = schemes.partition("@")
        for scheme in schemes.split(","):
            r = evaluate(path, scheme, scenario or "content-injection", n=n, progress=False, device=device)
            a = r.attack_success
            rows.append({"model": path, "scheme": scheme, "scenario": scenario or "content-injection",
                         "device": device, "n": r.n,
                         "attack_success": a.rate, "ci": [a.low, a.high],
                         "seconds": round(r.timings["total_s"], 1)})
            print(f"  {path} {scheme}: {a.rate:.3f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output prefix (.json and .md are written)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=2048, help="random tensors are SIZE x (SIZE+7)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--pairs", nargs="*", default=[], metavar="SRC:DEFENDED")
    p.add_argument("--behaviour", nargs="*", default=[], metavar="DIR=scheme,...[@SCENARIO]")
    p.add_argument("--no-kernels", action="store_true", help="skip part 1 (random and exhaustive tensors)")
    p.add_argument("-n", type=int, default=100, help="prompts per behaviour evaluation")
    args = p.parse_args()

    import bitsandbytes

    info = {"device": args.device, "torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__,
            "python": platform.python_version(), "safe_depth": SAFE_DEPTH}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    print(json.dumps(info), flush=True)
    result = {"info": info}
    start = time.perf_counter()
    result["kernels"] = [] if args.no_kernels else kernel_part(args.device, args.size, args.seed)
    print(f"kernels done {time.perf_counter() - start:.0f}s", flush=True)
    result["checkpoints"] = checkpoint_part(args.models, args.device)
    print(f"checkpoints done {time.perf_counter() - start:.0f}s", flush=True)
    result["pairs"] = pair_part(args.pairs, args.device)
    print(f"pairs done {time.perf_counter() - start:.0f}s", flush=True)
    result["behaviour"] = behaviour_part(args.behaviour, args.device, args.n)
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(result: dict) -> str:
    info = result["info"]
    lines = [f"# bitsandbytes {info['bitsandbytes']} on {info.get('gpu', info['device'])} "
             f"(torch {info['torch']}) against flipguard.schemes' CPU prediction", ""]
    if result["kernels"]:
        lines += ["## Kernels", "",
                  "| part | scheme | dtype | weights | level mismatches | max wall distance of a mismatch (cells) | "
                  "absmax mismatches | code-only |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["kernels"]:
        part = r["part"] + (f" M={r['m']}" if "m" in r else "")
        wd = f"{r['wall_distance_max']:.2e}" if r["mismatches"] else "-"
        lines.append(f"| {part} | {r['scheme']} | {r['dtype']} | {r['weights']} | {r['mismatches']} | {wd} | "
                     f"{r['absmax_mismatches']} | {r['code_only']} |")
    if result["checkpoints"]:
        lines += ["", "## Checkpoints loaded through transformers + BitsAndBytesConfig", "",
                  "| model | scheme | tensors | weights | code mismatches | scale mismatches |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in result["checkpoints"]:
            lines.append(f"| {r['model']} | {r['scheme']} | {r['tensors']} | {r['weights']} | "
                         f"{r['code_mismatches']} | {r['scale_mismatches']} |")
    if result["pairs"]:
        lines += ["", "## Defended weights (level changed by `flipguard defend`, CPU prediction)", "",
                  "| source -> defended | scheme | flipped | GPU agrees | min depth (cells) | levels changed on GPU |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in result["pairs"]:
            lines.append(f"| {r['source']} -> {r['defended']} | {r['scheme']} | {r['flipped_cpu']} | "
                         f"{r['flipped_gpu_agree']} | {r['min_depth_flipped']:.3f} | {r['changed_gpu']} |")
    if result["behaviour"]:
        lines += ["", "## Behaviour (greedy)", "",
                  "| model | scenario | scheme | device | n | attack success [95% CI] |", "|---|---|---|---|---:|---|"]
        for r in result["behaviour"]:
            scenario = r.get("scenario", "content-injection")
            lines.append(f"| {r['model']} | {scenario} | {r['scheme']} | {r['device']} | {r['n']} | "
                         f"{r['attack_success']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
