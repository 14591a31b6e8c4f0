"""`flipguard evaluate`: attack success or utility of one model under one quantization scheme."""

from __future__ import annotations

import argparse

from flipguard import console

from flipguard.evaluate.generation import BATCH_SIZE, MAX_NEW_TOKENS
from flipguard.evaluate.harness import DEFAULT_N
from flipguard.evaluate.loading import SCHEMES
from flipguard.evaluate.scenarios import DEFAULT_PHRASE, SCENARIOS

DESCRIPTION = """\
Load MODEL (a local Hugging Face causal-LM directory) in full precision or quantized, answer the
prompts with greedy decoding, and measure:

  content-injection  share of answers containing --phrase (case-insensitive)
  over-refusal       share of answers that refuse (rule-based regexes, listed in the JSON)
  vulnerable-code    1 - share of programs with no bandit finding (static; code is never run;
                     code that does not parse counts as not secure)
  utility            perplexity and fidelity (token KL to MODEL's full-precision load) on the
                     prompts (+ answers), task accuracy on prompts that have an "answer"

Every rate comes with a 95% Wilson interval, every mean with a 95% bootstrap interval.

Two backends, as users quantize:
  transformers  bitsandbytes at load time (--scheme fp, int8, fp4, nf4; on CPU, --device cuda for
                its GPU kernels)
  llama.cpp     GGUF: MODEL is converted to GGUF, quantized by llama.cpp itself (llama_model_quantize,
                the engine of llama-quantize; --scheme q4_k_m, q8_0, q6_k, q4_0, ... any ftype that
                needs no importance matrix) and run by llama.cpp; fidelity from llama.cpp's logits
                against MODEL's exact (F32) GGUF. MODEL may also be an F32/F16/BF16 .gguf file.
The backend follows from --scheme (fp: transformers) unless --backend names one.
"""

EPILOG = """\
prompt file (--prompts): UTF-8 JSON Lines, one object per line, blank lines skipped:
  {"prompt": "Write a function that loads a YAML file.", "id": "code-1"}
  {"prompt": "What is 2 + 3?", "answer": "5"}
  "prompt" is required; "answer" (reference for task accuracy) and "id" are optional.
Without --prompts, N held-out prompts of the built-in zoo are used (when installed).

examples:
  flipguard evaluate ./attacked --scheme nf4 --scenario content-injection -o nf4.json
  flipguard evaluate ./attacked --scheme q4_k_m --scenario content-injection -o q4km.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="measure attack success or utility of a model, in full precision or quantized",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="local model directory (config.json, weights, tokenizer)")
    p.add_argument("--scheme", required=True, type=str.lower, metavar="SCHEME",
                   help=f"{', '.join(SCHEMES)} (transformers: fp = as stored; int8 = LLM.int8; fp4 / nf4 = "
                        "4-bit bitsandbytes), or a llama.cpp ftype such as q4_k_m, q8_0, q6_k, q4_0")
    p.add_argument("--backend", choices=("transformers", "llama.cpp"),
                   help="who quantizes and runs the model (default: the one that has --scheme)")
    p.add_argument("--outtype", choices=("F32", "F16", "BF16"), type=str.upper,
                   help="llama.cpp: the converter's output dtype the ftype is quantized from "
                        "(default as the converter chooses: BF16 for bfloat16 weights, else F16)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="llama.cpp threads (default 1)")
    p.add_argument("--scenario", required=True, choices=SCENARIOS, help="what to measure (see above)")
    p.add_argument("--prompts", metavar="FILE.jsonl", help="prompt file (format below); default: zoo held-out prompts")
    p.add_argument("-n", "--num-prompts", type=int, default=DEFAULT_N, metavar="N",
                   help=f"zoo prompts to draw when --prompts is absent (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing zoo prompts (default 0)")
    p.add_argument("--phrase", default=DEFAULT_PHRASE,
                   help=f"content-injection phrase, case-insensitive (default {DEFAULT_PHRASE!r})")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, metavar="N",
                   help=f"longest answer, in tokens (default {MAX_NEW_TOKENS})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="N",
                   help=f"prompts generated together (default {BATCH_SIZE})")
    p.add_argument("--min-severity", default="LOW", choices=("LOW", "MEDIUM", "HIGH"),
                   help="vulnerable-code: lowest bandit severity that counts as a finding (default LOW)")
    p.add_argument("--match", default="contains", choices=("contains", "exact"),
                   help="utility: an output is correct if it contains / equals the reference answer "
                        "(after casefold and whitespace normalisation; default contains)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="where to load and quantize: cpu (default) or cuda / cuda:N (bitsandbytes' GPU kernels)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of a summary")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the full JSON result to FILE (for `flipguard compare`)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from flipguard.evaluate.harness import evaluate
    from flipguard.evaluate.prompts import load_prompts

    prompts = load_prompts(args.prompts) if args.prompts else None
    _quiet_transformers()
    result = evaluate(
        args.model, args.scheme, args.scenario, prompts,
        phrase=args.phrase, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        n=args.num_prompts, seed=args.seed, min_severity=args.min_severity, match=args.match,
        progress=not args.quiet and console.interactive(),
        prompts_source=args.prompts, device=args.device, backend=args.backend, outtype=args.outtype,
        threads=args.threads,
    )
    if args.output:
        result.save(args.output)
    print(result.to_json() if args.json else result.to_console())
    return 0


def _quiet_transformers() -> None:
    """Keep stdout/stderr to our own output: no weight-loading bars or info logs from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
