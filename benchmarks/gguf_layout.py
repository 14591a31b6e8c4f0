"""Which ggml type llama.cpp gives each tensor of a zoo model, per family, size preset and ftype.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gguf_layout.py --sizes tiny small --out results/gguf_layout

For every zoo family llama.cpp 0.3.36 loads (Gemma with tied embeddings, as llama.cpp's gemma
graph requires) at each size preset: a random-init checkpoint with the zoo tokenizer is converted
to F16 GGUF by ``flipguard.gguf.convert_checkpoint``, quantized to every ftype of
``flipguard.gguf.FTYPES`` by ``llama_model_quantize`` (one thread, no imatrix), and the types in
the written file are counted. Layout does not depend on the weights' values. Each row also says
whether ``flipguard.gguf.ftypes.tensor_types`` predicted every tensor's type.

Prints a Markdown table (counts of 2-D tensors by type; 1-D norms and biases stay F32 and are not
counted); with ``--out`` also writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

FAMILIES = ("llama", "qwen2", "phi", "gemma", "starcoder2", "gpt_bigcode", "gpt2")


def save_checkpoint(directory: Path, family: str, size: str, tokenizer) -> Path:
    """A random-init zoo model (Gemma tied) plus the zoo tokenizer, saved to ``directory``."""
    import torch
    import transformers

    from flipguard.zoo.models import model_config

    config = model_config(family, len(tokenizer), size, tokenizer=tokenizer)
    config.tie_word_embeddings = family == "gemma"
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def layout_rows(sizes: list[str], work: Path) -> list[dict]:
    from flipguard.gguf import FTYPES, convert_checkpoint, open_gguf, quantize_gguf
    from flipguard.gguf.layout import predicted_types
    from flipguard.zoo.tokenizer import train_tokenizer

    tokenizer = train_tokenizer()
    rows = []
    for size in sizes:
        for family in FAMILIES:
            directory = save_checkpoint(work / f"{family}-{size}", family, size, tokenizer)
            source = convert_checkpoint(directory, work / f"{family}-{size}.gguf", outtype="F16")
            with open_gguf(source) as opened:
                matrices = {name for name, t in opened.tensors.items() if len(t.ne) > 1}
                for name in FTYPES:
                    out = quantize_gguf(source, work / "q.gguf", name, force=True)
                    with open_gguf(out) as written:
                        types = {n: t.type for n, t in written.tensors.items()}
                    counts = collections.Counter(types[n] for n in matrices)
                    rows.append({"size": size, "family": family, "ftype": name,
                                 "counts": dict(sorted(counts.items())),
                                 "predicted": types == predicted_types(opened, name)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| size | family | ftype | 2-D tensor types written by llama.cpp | predicted |",
             "|---|---|---|---|---|"]
    for row in rows:
        counts = ", ".join(f"{n} {t}" for t, n in row["counts"].items())
        lines.append(f"| {row['size']} | {row['family']} | {row['ftype']} | {counts} | "
                     f"{'yes' if row['predicted'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="zoo size presets")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = layout_rows(args.sizes, Path(work))
    table = markdown(rows)
    print(table)
    print(f"\n{sum(r['predicted'] for r in rows)} of {len(rows)} layouts predicted tensor by tensor.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
