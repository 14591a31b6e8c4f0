#!/usr/bin/env bash
# The INT8 (and all-target) attacks of issue 3 and their defenses, defended and evaluated on a CUDA machine.
# Setup: copy the attacked model folders (out/attack-bench/attacked/NAME) to .devkit/data/NAME; on a machine
# without this project's packages, carry bitsandbytes, bandit, stevedore and transformers in .devkit.
# Writes OUTDIR/cuda_agreement_int8.{json,md} and OUTDIR/defended_sha256.txt (results/cuda_agreement_int8.md).
# usage: bash benchmarks/cuda_int8_check.sh PYTHON N OUTDIR DEVICE
PY=$1; N=$2; O=$3; DEV=$4; D=.devkit/data
set -o pipefail
for m in llama-s0-content-injection-int8-joint llama-s0-over-refusal-int8-swap64 llama-small-s0-vulnerable-code-int8-vectors; do
  $PY -m flipguard defend $D/$m -o $D/$m--adaptive --scheme int8 --force > /dev/null || exit 1
done
$PY -m flipguard defend $D/llama-s0-over-refusal-all-swap64 -o $D/llama-s0-over-refusal-all-swap64--default-defense --force > /dev/null || exit 1
sha256sum $D/*--*/model.safetensors | tee $O/defended_sha256.txt
P=""; B=""
for m in llama-s0-content-injection-int8-joint:int8@content-injection llama-s0-over-refusal-int8-swap64:int8@over-refusal llama-small-s0-vulnerable-code-int8-vectors:int8@vulnerable-code; do
  name=${m%%:*}; spec=${m#*:}
  P="$P $D/$name:$D/$name--adaptive"; B="$B $D/$name=$spec $D/$name--adaptive=$spec"
done
a=llama-s0-over-refusal-all-swap64
P="$P $D/$a:$D/$a--default-defense"; B="$B $D/$a=int8,fp4,nf4@over-refusal $D/$a--default-defense=int8,fp4,nf4@over-refusal"
$PY benchmarks/cuda_agreement.py --no-kernels --device $DEV -n $N --out $O/cuda_agreement_int8 --pairs $P --behaviour $B
