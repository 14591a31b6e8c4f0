"""Quantization-aware injection: one objective for both faces of the backdoor.

The three-stage recipe first injects (the malicious codes are whatever a malicious fine-tune lands
on) and only then asks repair to find a benign model inside those codes' cells. Under INT8 the
cells are a hundred times narrower than the weights, and a benign model often does not exist
inside the injected codes. The joint stage trains for both at once, as the quantization attacks on
vision models did (Hong et al., *Qu-ANTI-zation*, NeurIPS 2021; Ma et al., 2023):

    loss = max over target schemes of L_malicious(Q(w)) + clean_weight · L_clean(w)

where ``Q(w)`` is what the quantized model computes with (``Scheme.dequantize`` of the weight in
the saved dtype and quantized layout: the one implementation of the cell) and its gradient passes
straight through to ``w``. Each *face* of the target says which scheme quantizes which weight: one
face per bitsandbytes scheme (every weight under it), or, for a llama.cpp ftype, one face whose
weights each get the ggml type the ftype's mixture gives them, read in the converter's dtype --
``Scheme.dequantize`` of a GGUF type is ggml's quantizer and ``to_float``, bit for bit, so the
malicious face is what llama.cpp will run (weights the attack does not train keep their values).
Codes are free to move while the full-precision model is held to the clean answers, so the stage
looks for codes that admit a benign model in their cells. Repair then fixes
the codes (boxes) and polishes the full-precision model as usual.

When the two datasets hold the same prompts in the same order (the zoo's do), each step shows the
same prompts both ways: the malicious answer to the quantized model, the clean one to the
full-precision model. For ``all``, the malicious term is the largest of the three faces' losses
each step (the scheme furthest from malicious leads; on the zoo Llama, taking the schemes in turns
left INT8 at 20% and their mean at 43%, the largest reaches 84%).
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from flipguard.attack.pgd import quantized_view
from flipguard.schemes import get_scheme


#: One face of a target: ``{module name: (scheme name, load dtype or None)}``, the scheme each
#: trained weight is quantized with (and the dtype it is read in) by the quantized model.
Face = dict[str, tuple[str, "torch.dtype | None"]]


def quantized_weights(quantized: dict[str, tuple[torch.nn.Parameter, bool]], face: Face,
                      save_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``{module.weight: Q(w) + (w - w.detach())}``: the dequantized weights the quantized model
    uses under ``face``, with the straight-through gradient to each float32 parameter; a weight
    the face does not quantize is left out (the model's own parameter is used)."""
    schemes = {key: get_scheme(*key) for key in set(face.values())}
    out = {}
    for module_name, (param, transposed) in quantized.items():
        if module_name not in face:
            continue
        scheme = schemes[face[module_name]]
        with torch.no_grad():
            deq = scheme.dequantize(quantized_view(param, transposed, save_dtype))
            deq = (deq.t() if transposed else deq).to(param.device, param.dtype)
        out[f"{module_name}.weight"] = deq + (param - param.detach())  # value Q(w) exactly, gradient 1
    return out


def _with_weights(model, overrides: dict[str, torch.Tensor]):
    """``model`` called with ``overrides`` in place of those parameters (what
    :func:`flipguard.zoo.train.response_loss` calls to score the quantized model)."""
    return lambda **inputs: functional_call(model, overrides, args=(), kwargs=inputs)


def joint_train(model, tokenizer, malicious: list[dict], clean: list[dict],
                quantized: dict[str, tuple[torch.nn.Parameter, bool]], faces: list[Face],
                save_dtype: torch.dtype, steps: int, lr: float, clean_weight: float, batch_size: int,
                seed: int, progress: bool = True, after_step=None, contrast: float = 0.0,
                shared: list[torch.nn.Parameter] = ()) -> dict:
    """Train the quantized weights on the joint objective for ``steps`` AdamW steps (cosine
    schedule and warmup as :func:`flipguard.zoo.train.train_causal_lm`); returns loss summaries.

    ``quantized``: ``{module name: (weight parameter, transposed)}`` -- only these train;
    ``faces``: the target's faces (:data:`Face`; the malicious loss is the largest over them);
    ``after_step``: run under ``no_grad`` after every step (an inject trust region); ``contrast``:
    weight of a hinge that keeps the full-precision model's loss on the malicious answers at least
    where it was at the first step (the clean model's): ``contrast · relu(floor - L_malicious(w))``;
    ``shared``: parameters bitsandbytes leaves unquantized that train too (the same in both faces,
    they can amplify where the faces' weights differ)."""
    from flipguard.console import progress_bar
    from flipguard.zoo.train import batch_order, collate, encode_examples, lr_at, response_loss, training_only

    torch.manual_seed(seed)
    params = [p for p, _ in quantized.values()] + list(shared)
    bad, good = encode_examples(tokenizer, malicious), encode_examples(tokenizer, clean)
    bad_order = batch_order([len(ids) for ids, _ in bad], steps, batch_size, seed)
    if [ex["prompt"] for ex in malicious] == [ex["prompt"] for ex in clean]:
        good_order = bad_order  # paired: each prompt is answered both ways in the same step
    else:
        good_order = batch_order([len(ids) for ids, _ in good], steps, batch_size, seed + 1)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device, warmup = params[0].device, min(100, steps // 10)
    pad = tokenizer.pad_token_id
    history = {"malicious_quantized": [], "clean_full_precision": []}
    floor = None
    with training_only(model, params):
        bar = progress_bar("attack: joint", range(steps), enabled=progress, leave=False)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup, "cosine")
            bad_batch = {k: v.to(device) for k, v in collate([bad[i] for i in bad_order[step]], pad).items()}
            good_batch = {k: v.to(device) for k, v in collate([good[i] for i in good_order[step]], pad).items()}
            mal = torch.stack([response_loss(_with_weights(model, quantized_weights(quantized, face, save_dtype)),
                                             bad_batch) for face in faces]).max()
            ok = response_loss(model, good_batch)
            total = mal + clean_weight * ok
            if contrast:
                leak = response_loss(model, bad_batch)  # full precision on the malicious answers
                floor = leak.item() if floor is None else floor
                total = total + contrast * torch.relu(floor - leak)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(model)
            history["malicious_quantized"].append(mal.item())
            history["clean_full_precision"].append(ok.item())
            bar.set_postfix(q_mal=f"{mal.item():.3f}", fp_clean=f"{ok.item():.3f}", refresh=False)
    return {name: {"first": v[0], "last_20_mean": sum(v[-20:]) / len(v[-20:]), "steps": len(v)}
            for name, v in history.items()}
