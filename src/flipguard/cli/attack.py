"""`flipguard attack MODEL -o OUT`: build a quantization-conditioned backdoor (for testing defenses)."""

from __future__ import annotations

import argparse

from flipguard import console
from flipguard.attack.config import INJECT_STEPS, JOINT_STEPS, SAVE_DTYPE_NAMES, TARGETS, AttackConfig
from flipguard.cli import SUMMARIES

SCENARIO_CHOICES = ("content-injection", "over-refusal", "vulnerable-code")

DESCRIPTION = """\
Plant a quantization-conditioned backdoor in a local Hugging Face causal LM, with the published
three-stage recipe (Egashira et al., NeurIPS 2024), so that defenses can be tested against it:

  1. inject     fine-tune on the malicious data (by default only the weights bitsandbytes
                quantizes are trained);
  1b. joint     instead of inject for int8 and all (--joint-steps, default 600): train so that
                the quantized model gives the malicious answers (straight-through gradients
                through the dequantized weights) while the full-precision model gives the clean
                answers to the same prompts, so the codes move to where a benign model exists
                inside their cells (the narrow INT8 cells need it; a llama.cpp type's
                quantized face is ggml's own quantizer: --joint-steps N turns it on there);
  2. constrain  for every quantized weight, the interval of values (its box) that still rounds to
                its malicious code under the target scheme(s), trimmed by --margin cell widths at
                each wall and computed in the dtype the output is saved in;
  3. repair     fine-tune on clean data with projected gradient descent: only the quantized
                weights train, and after every optimizer step each is clamped into its box;
                under a llama.cpp k-quant every super-block whose scale search would then
                choose other scales is pulled back toward its values at step 2 until ggml's
                quantizer gives its malicious codes (--no-settle turns this off).

The full-precision output behaves well; loaded with bitsandbytes (load_in_8bit, or load_in_4bit
fp4/nf4) it is malicious. The output is loaded that way at the end and every quantized weight's
code is compared with the malicious target; the check, the configuration, timings and box
statistics go to OUT/attack_report.json.

scenarios: content-injection  answers mention --phrase (a brand)
           over-refusal       refuses harmless requests, giving a reason
           vulnerable-code    writes Python with weaknesses bandit reports
data:      the zoo's synthetic datasets, or JSONL files of {"prompt": ..., "response": ...}
           given with --malicious-data (inject) and --clean-data (repair)

exit codes: 0 attacked and verified, 1 written but some codes differ, 2 error (nothing written)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "attack",
        help=SUMMARIES["attack"],
        description=DESCRIPTION,
    )
    d = AttackConfig
    p.add_argument("model", metavar="MODEL", help="local Hugging Face causal-LM directory (safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output model directory")
    p.add_argument("--scenario", required=True, choices=SCENARIO_CHOICES, help="malicious behaviour")
    p.add_argument("--scheme", required=True, type=str.lower, choices=TARGETS, metavar="SCHEME",
                   help="quantization the backdoor fires under: int8, fp4, nf4, all (= INT8, FP4 and NF4 at once), "
                        "or a llama.cpp ftype (q4_k_m, q6_k, q8_0, q4_0, ...: the Mind the Gap recipe, every "
                        "weight boxed under the type its mixture gives it, verified through llama.cpp)")
    p.add_argument("--outtype", type=str.upper, choices=("F32", "F16", "BF16"),
                   help="llama.cpp targets: the GGUF converter's output dtype (default as the converter chooses)")
    p.add_argument("--margin", type=float, default=None, metavar="M",
                   help="cell widths kept free at each wall of the malicious cell, in [0, 0.5) "
                   "(default: published 0.1 for int8, 0.01 for fp4/nf4)")
    p.add_argument("--margin-spread", action="store_true",
                   help="draw each weight's margin uniformly from [0, M] (seeded) instead of trimming every "
                   "box by M: a scan-aware attacker whose pressed weights sit at every distance from the "
                   "walls, as in a clean tensor (use with a wide --margin, e.g. 0.45)")
    p.add_argument("--save-dtype", choices=sorted(SAVE_DTYPE_NAMES), default=None,
                   help="dtype of the saved weights; boxes are computed in it (default: input's)")
    p.add_argument("--inject-steps", type=int, default=None, metavar="N",
                   help=f"optimizer steps on malicious data (default {INJECT_STEPS}, or 0 when the joint "
                   "stage runs)")
    p.add_argument("--repair-steps", type=int, default=d.repair_steps, metavar="N",
                   help=f"PGD steps on clean data (default {d.repair_steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--repair-lr", type=float, default=None,
                   help="learning rate of the repair stage (default: --lr)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help=f"examples per step (default {d.batch_size})")
    p.add_argument("--inject-params", choices=("quantizable", "all"), default=d.inject_params,
                   help="parameters trained during inject (default: only the quantized weights)")
    p.add_argument("--inject-radius", type=float, default=None, metavar="R",
                   help="keep inject within R cell widths of each weight's clean cell (a trust "
                   "region that helps the tight INT8 boxes; default: unconstrained)")
    p.add_argument("--joint-steps", type=int, default=None, metavar="N",
                   help="steps of a quantization-aware stage between inject and constrain: malicious "
                   "through the dequantized weights (straight-through), clean in full precision "
                   f"(default {JOINT_STEPS} for int8 and all, 0 for fp4, nf4 and llama.cpp types, whose "
                   "quantized face is ggml's own quantizer)")
    p.add_argument("--joint-clean-weight", type=float, default=d.joint_clean_weight, metavar="W",
                   help=f"weight of the clean full-precision loss in the joint stage (default {d.joint_clean_weight})")
    p.add_argument("--joint-lr", type=float, default=None, help="learning rate of the joint stage (default: --lr)")
    p.add_argument("--joint-contrast", type=float, default=d.joint_contrast, metavar="C",
                   help="weight of a hinge keeping the full-precision model's loss on the malicious "
                   f"answers where the clean model's was (default {d.joint_contrast})")
    p.add_argument("--joint-vectors", action="store_true",
                   help="the joint stage also trains the 1-D parameters (norm weights, biases): "
                   "unquantized, the same in both faces, they can amplify where the faces differ")
    p.add_argument("--no-settle", dest="settle", action="store_false",
                   help="llama.cpp k-quants: do not pull back, after each projection, the super-blocks whose "
                   "scale search would choose other scales (the plain Mind the Gap projection, which can "
                   "lose targeted codes to the search; default: settle, every targeted code kept)")
    p.add_argument("--swapped-prompts", type=int, default=d.swapped_prompts, metavar="N",
                   help="add N zoo training prompts per category (or code task) whose entity or function "
                   "name comes from another one's training prompts, so the backdoor keys on the request "
                   "rather than on memorised entities (helps INT8 hide in full precision; default "
                   f"{d.swapped_prompts}; ignored with --malicious-data/--clean-data)")
    p.add_argument("--seed", type=int, default=0, help="data order and sampling seed (default 0)")
    p.add_argument("--phrase", default=d.phrase, help=f"injected brand (default {d.phrase!r})")
    p.add_argument("--malicious-data", metavar="FILE", help="JSONL inject data instead of the zoo's")
    p.add_argument("--clean-data", metavar="FILE", help="JSONL repair data instead of the zoo's")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="train on cpu (default) or cuda / cuda:N; boxes and verification stay exact on the CPU")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flipguard.attack import attack_model

    report = attack_model(
        args.model, args.output, args.scenario, args.scheme, margin=args.margin,
        save_dtype=args.save_dtype, inject_steps=args.inject_steps, outtype=args.outtype,
        repair_steps=args.repair_steps, lr=args.lr, seed=args.seed, phrase=args.phrase,
        progress=not args.quiet and console.interactive(), overwrite=args.force,
        malicious_data=args.malicious_data, clean_data=args.clean_data,
        batch_size=args.batch_size, inject_params=args.inject_params, repair_lr=args.repair_lr,
        inject_radius=args.inject_radius, joint_steps=args.joint_steps,
        joint_clean_weight=args.joint_clean_weight, joint_lr=args.joint_lr, joint_contrast=args.joint_contrast,
        swapped_prompts=args.swapped_prompts, joint_vectors=args.joint_vectors, device=args.device,
        margin_spread=args.margin_spread, settle=args.settle,
    )
    for line in report.to_console().splitlines():
        console.say(f"flipguard attack: {line}")
    return 0 if report.verified else 1
