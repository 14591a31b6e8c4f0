"""Peak memory and end-to-end speed of `flipguard defend` on a large synthetic sharded checkpoint.

Builds (once, under --dir) a Llama-shaped checkpoint of random weights of at least --gb GB in
several shards with ``model.safetensors.index.json``, then, in one run:

- ``flipguard defend`` in a subprocess under ``/usr/bin/time -v``: peak RSS against the budget
  2 × largest tensor + 500 MB (issue 4 point 6), and its wall time;
- a plain safetensors read-and-write copy of the same checkpoint (``load_file`` + ``save_file``
  per shard) in a subprocess, twice: the faster wall time (the first run may read a cold page
  cache: measured 4.3-14.4 s for the same 2.2 GB on this machine) and the larger peak RSS;
- the end-to-end ratio copy_time / defend_time (target ≥ 0.5);
- the same copy followed by ``os.sync()`` inside the timed command, for reference: ``flipguard
  defend`` fsyncs its output before the atomic rename, the plain copy leaves it to the kernel.

Before each timed command the page cache's dirty pages are written out (``os.sync()``, not
timed), so no command pays for the write-back of the one before it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defend_memory.py --gb 2.0 --dir /tmp/fg-big \\
        --scheme nf4 --policy threshold --json results/defend_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch


SHAPES = {"small": (2048, 5632, 16), "7b": (4096, 11008, 32)}  # hidden, MLP, heads (7b: Llama-2-7B's)


def build(directory: Path, gb: float, dtype: torch.dtype, shape: str = "small") -> dict:
    """Llama config (vocab 32000; ``shape`` "small": hidden 2048, MLP 5632, with as many layers as
    reach ``gb``; "7b": Llama-2-7B's hidden 4096, MLP 11008 and 32 layers, ``gb`` ignored)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    (hidden, inter, heads), vocab = SHAPES[shape], 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    size = torch.finfo(dtype).bits // 8
    layers = 32 if shape == "7b" else max(1, int((gb * 1e9 / size - 2 * vocab * hidden) / per_layer) + 1)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                         tie_word_embeddings=False, dtype=str(dtype).replace("torch.", ""))
    if (directory / "model.safetensors.index.json").exists():
        return json.loads((directory / "bench_info.json").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    groups = [{"model.embed_tokens.weight": (vocab, hidden)}]
    for i in range(layers):
        p = f"model.layers.{i}."
        groups.append({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (hidden, hidden),
                       p + "self_attn.v_proj.weight": (hidden, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    groups.append({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    weight_map, shard, shard_bytes, shards = {}, {}, 0, []
    total = sum(torch.Size(s).numel() for grp in groups for s in grp.values()) * size

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, directory / name, metadata={"format": "pt"})
            shards.append(name)
            weight_map.update({k: name for k in shard})
            shard, shard_bytes = {}, 0

    for grp in groups:
        for name, shape in grp.items():
            shard[name] = torch.ones(shape, dtype=dtype) if len(shape) == 1 else rand(*shape)
            shard_bytes += shard[name].numel() * size
        if shard_bytes > 400e6:
            flush()
    flush()
    count = len(shards)
    renamed = {}
    for i, name in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        (directory / name).rename(directory / final)
        renamed[name] = final
    index = {"metadata": {"total_size": total}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    info = {"bytes": total, "layers": layers, "shards": count, "largest_tensor_bytes": vocab * hidden * size,
            "dtype": str(dtype)}
    (directory / "bench_info.json").write_text(json.dumps(info))
    return info


COPY = """
import sys, json, shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True)
index = json.loads((src / "model.safetensors.index.json").read_text())
for shard in sorted(set(index["weight_map"].values())):
    save_file(load_file(src / shard), dst / shard, metadata={"format": "pt"})
for f in src.iterdir():
    if not f.name.endswith(".safetensors"):
        shutil.copy2(f, dst / f.name)
"""


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of ``cmd`` under /usr/bin/time -v, dirty pages
    written out first (not timed)."""
    os.sync()
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    return wall, rss_kb * 1024, run.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--dir", default="/tmp/fg-big")
    p.add_argument("--scheme", default="int8,fp4,nf4")
    p.add_argument("--policy", default="adaptive")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--keep", action="store_true", help="keep the outputs (the input is always kept)")
    args = p.parse_args()
    src = Path(args.dir) / f"model-{args.gb:g}gb-{args.dtype}"
    info = build(src, args.gb, getattr(torch, args.dtype))
    print(f"checkpoint {src}: {info['bytes'] / 1e9:.2f} GB, {info['shards']} shards, largest tensor "
          f"{info['largest_tensor_bytes'] / 1e6:.0f} MB", flush=True)
    out_defend, out_copy = Path(args.dir) / "defended", Path(args.dir) / "copied"
    for out in (out_defend, out_copy):
        shutil.rmtree(out, ignore_errors=True)
    copies = []
    for _ in range(2):  # the first may read a cold page cache; the faster one is the fair baseline
        shutil.rmtree(out_copy, ignore_errors=True)
        copies.append(timed([sys.executable, "-c", COPY, str(src), str(out_copy)]))
    copy_s, copy_rss = min(c[0] for c in copies), max(c[1] for c in copies)
    print(f"plain safetensors copy: {copy_s:.1f} s (runs: {', '.join(f'{c[0]:.1f}' for c in copies)} s), "
          f"peak RSS {copy_rss / 1e6:.0f} MB", flush=True)
    shutil.rmtree(out_copy, ignore_errors=True)
    synced_s = timed([sys.executable, "-c", COPY + "import os; os.sync()\n", str(src), str(out_copy)])[0]
    print(f"the same copy, then os.sync(): {synced_s:.1f} s", flush=True)
    defend_s, defend_rss, summary = timed([sys.executable, "-m", "flipguard", "defend", str(src), "-o", str(out_defend),
                                           "--scheme", args.scheme, "--policy", args.policy])
    print(summary)
    budget = 2 * info["largest_tensor_bytes"] + 500e6
    result = {
        "checkpoint": info, "scheme": args.scheme, "policy": args.policy, "threads": os.environ.get("OMP_NUM_THREADS"),
        "defend_s": defend_s, "defend_peak_rss": defend_rss, "rss_budget": budget, "rss_ok": defend_rss < budget,
        "copy_s": copy_s, "copy_runs_s": [c[0] for c in copies], "copy_peak_rss": copy_rss,
        "copy_then_sync_s": synced_s,
        "end_to_end_ratio": copy_s / defend_s,
    }
    print(f"defend: {defend_s:.1f} s, peak RSS {defend_rss / 1e6:.0f} MB (budget {budget / 1e6:.0f} MB: "
          f"{'ok' if result['rss_ok'] else 'OVER'}); end-to-end speed vs plain copy {copy_s / defend_s:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.keep:
        for out in (out_defend, out_copy):
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
