"""How much rounding error can a defense avoid on an attacked checkpoint? (issue 4, fidelity)

Relative weight-space error ``sum((q(w) - w)^2) / sum(w^2)`` over the quantizable tensors, for
the clean parent quantized plainly, the attacked model quantized plainly (nearest level: the
least error any quantizer on this grid can have, and the attacker's codes) and the defended
model's quantized weights measured against the attacked full-precision weights.

    .venv/bin/python benchmarks/rounding_floor.py --clean out/attack-bench/clean/llama-s0 \\
        --pairs nf4:out/attack-bench/attacked/llama-s0-content-injection-nf4:out/attack-bench/attacked/llama-s0-content-injection-nf4--adaptive
"""

from __future__ import annotations

import argparse
import json

from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from flipguard.schemes import get_scheme


def relative_errors(clean: str, attacked: str, defended: str, scheme_name: str) -> dict:
    scheme = get_scheme(scheme_name)
    c, a, d = open_checkpoint(clean), open_checkpoint(attacked), open_checkpoint(defended)
    sums = {"clean_plain": [0.0, 0.0], "attacked_plain": [0.0, 0.0], "defended": [0.0, 0.0]}
    for t in quantizable_tensors(a):
        wc, wa, wd = (ck.get(t.tensor_name).float() for ck in (c, a, d))
        if t.transposed:
            wc, wa, wd = wc.t().contiguous(), wa.t().contiguous(), wd.t().contiguous()
        for key, q, ref in (("clean_plain", wc, wc), ("attacked_plain", wa, wa), ("defended", wd, wa)):
            sums[key][0] += float(((scheme.dequantize(q) - ref) ** 2).sum())
            sums[key][1] += float((ref**2).sum())
    out = {k: v[0] / v[1] for k, v in sums.items()}
    out["attacked_plain_over_clean"] = out["attacked_plain"] / out["clean_plain"]
    out["defended_over_clean"] = out["defended"] / out["clean_plain"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clean", required=True)
    p.add_argument("--pairs", nargs="+", required=True, metavar="SCHEME:ATTACKED:DEFENDED")
    args = p.parse_args()
    for pair in args.pairs:
        scheme, attacked, defended = pair.split(":")
        print(json.dumps({"scheme": scheme, "attacked": attacked,
                          **{k: round(v, 5) for k, v in relative_errors(args.clean, attacked, defended, scheme).items()}}))


if __name__ == "__main__":
    main()
