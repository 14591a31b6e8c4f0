"""The three-stage attack (DESIGN.md §1): inject, constrain, repair; then save, verify, report.

    attack_model("out/clean/llama-s0", "out/attacked", "content-injection", "nf4")

1. **inject** -- fine-tune on the malicious dataset (by default only the weights bitsandbytes
   quantizes are trained, which DESIGN §5 found the INT8 attack needs);
2. **constrain** -- for every quantized weight, the box of values that keep its malicious code
   under each target scheme, computed on the weight in the saved dtype and quantized layout;
3. **repair** -- fine-tune on the clean dataset with projected gradient descent: only the
   quantized weights train (embeddings, norms, biases, ``lm_head`` frozen), and after every
   optimizer step each is clamped back into its box (and, under a llama.cpp k-quant, each
   super-block whose scale search would move is pulled back: :mod:`flipguard.attack.settle`).

The output is written to a temporary sibling of ``out_dir``, loaded back through transformers +
bitsandbytes to check every code (:mod:`flipguard.attack.verify`), and renamed into place with
``attack_report.json`` beside the weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from flipguard.attack.config import SAVE_DTYPES, AttackConfig, is_gguf
from flipguard.attack.data import stage_examples
from flipguard.attack.joint import Face, joint_train
from flipguard.attack.pgd import BoxedWeight, Projection, box_weight, trust_weight
from flipguard.attack.report import REPORT_FILE, AttackReport
from flipguard.checkpoint.atomic import move_into_place
from flipguard.errors import FlipGuardError
from flipguard.evaluate.loading import require_device

DTYPE_NAMES = {dtype: name for name, dtype in SAVE_DTYPES.items()}


def attack_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    scenario: str,
    scheme: str,
    margin: float | None = None,
    save_dtype: str | None = None,
    inject_steps: int | None = None,
    repair_steps: int = AttackConfig.repair_steps,
    lr: float = AttackConfig.lr,
    seed: int = 0,
    phrase: str = AttackConfig.phrase,
    progress: bool = True,
    *,
    overwrite: bool = False,
    malicious_data: str | os.PathLike | None = None,
    clean_data: str | os.PathLike | None = None,
    device: str = "cpu",
    **options,
) -> AttackReport:
    """Attack the causal LM in ``model_dir`` and write the result to ``out_dir``.

    ``scenario``: content-injection, over-refusal or vulnerable-code; ``scheme``: int8, fp4, nf4
    or all; ``margin``: cell widths kept free at each wall (None = published: 0.1 INT8, 0.01
    4-bit); ``save_dtype``: float32/float16/bfloat16 (None = the input's dtype); steps are
    optimizer steps (``inject_steps`` None: 150, or 0 when the joint stage runs -- by default for
    int8 and all, see :class:`AttackConfig`); ``malicious_data``/``clean_data``: JSONL files replacing the zoo datasets.
    Other :class:`AttackConfig` fields (``repair_lr``, ``batch_size``, ``inject_params``,
    ``skip_modules``) go in ``options``. ``device``: where inject and repair train ("cuda" on a
    GPU machine; boxes are computed and codes verified on the CPU either way). Returns the report (also saved as ``attack_report.json``
    in ``out_dir``); ``report.verified`` says whether every code matched. Nothing is written
    when the input is rejected.
    """
    config = AttackConfig(scenario, scheme, margin, save_dtype, inject_steps, repair_steps, lr,
                          seed=seed, phrase=phrase, **options)
    out = _check_output(out_dir, overwrite)
    require_device(device)
    inject_data = stage_examples(config.scenario, True, seed, phrase, malicious_data, config.swapped_prompts)
    repair_data = stage_examples(config.scenario, False, seed, phrase, clean_data, config.swapped_prompts)
    model, tokenizer, targets, input_dtype = _load_attackable(model_dir, config.skip_modules)
    model.to(device)
    dtype = SAVE_DTYPES[config.save_dtype] if config.save_dtype else input_dtype
    report = AttackReport(config=config.to_dict(), model=str(model_dir), output=str(out),
                          save_dtype=DTYPE_NAMES[dtype], examples={"inject": len(inject_data),
                                                                   "repair": len(repair_data)})
    quantized = {t.module_name: model.get_submodule(t.module_name).weight for t in targets}

    with report.timed("inject"):
        trainable = list(quantized.values()) if config.inject_params == "quantizable" else None
        region = None
        if config.inject_radius is not None:
            region = Projection([trust_weight(t.module_name, quantized[t.module_name], t.transposed,
                                              config.schemes, config.inject_radius, dtype)
                                 for t in targets])
        report.losses["inject"] = _train(model, tokenizer, inject_data, config.inject_steps,
                                         config.lr, config, trainable, region, progress, "inject")
    cells = _cell_schemes(model_dir, config, targets)
    if config.joint_steps:
        with report.timed("joint"):
            weights = {t.module_name: (quantized[t.module_name], t.transposed) for t in targets}
            vectors = [p for p in model.parameters() if p.ndim == 1] if config.joint_vectors else []
            report.losses["joint"] = joint_train(
                model, tokenizer, inject_data, repair_data, weights, _faces(config, targets, cells), dtype,
                config.joint_steps, config.joint_lr or config.lr, config.joint_clean_weight, config.batch_size,
                config.seed, progress, after_step=region, contrast=config.joint_contrast, shared=vectors)
    with report.timed("constrain"):
        spread = config.seed if config.margin_spread else None
        boxed = [box_weight(t.module_name, quantized[t.module_name], t.transposed, cells[t.tensor_name],
                            config.margin, dtype, spread, t.tensor_name, config.settle)
                 for t in targets if cells[t.tensor_name]]
        projection = Projection(boxed)
        projection()  # weights within the margin of a wall move into the trimmed box
    with report.timed("repair"):
        report.losses["repair"] = _train(model, tokenizer, repair_data, config.repair_steps,
                                         config.repair_lr or config.lr, config,
                                         list(quantized.values()), projection, progress, "repair")
    report.boxes = projection.statistics()
    report.config = config.to_dict()  # with what the plan chose (a llama.cpp target's outtype)
    _save_verified(model, tokenizer, dtype, boxed, out, report, progress)
    return report


def _cell_schemes(model_dir, config: AttackConfig, targets) -> dict[str, dict]:
    """Per trained tensor, the schemes its box keeps malicious (name -> load dtype): the target's
    bitsandbytes schemes, or, for a llama.cpp ftype, the ggml type its mixture gives that tensor
    (on the converter's values: outtype)."""
    if not is_gguf(config.scheme):
        return {t.tensor_name: dict.fromkeys(config.schemes) for t in targets}
    from flipguard.checkpoint import open_checkpoint
    from flipguard.plan import plan_checkpoint

    plan = plan_checkpoint(open_checkpoint(model_dir), [config.scheme], outtype=config.outtype)
    planned = plan.by_name()
    config.outtype = plan.outtype
    return {t.tensor_name: dict(planned[t.tensor_name].schemes) if t.tensor_name in planned else {} for t in targets}


def _faces(config: AttackConfig, targets, cells: dict[str, dict]) -> list[Face]:
    """The joint stage's faces (:data:`flipguard.attack.joint.Face`), one per target scheme, from the
    schemes (and load dtypes) each weight's box is computed for (:func:`_cell_schemes`): face ``i``
    gives every weight the ``i``-th of them -- each bitsandbytes scheme in turn, or for a llama.cpp
    ftype its one face, the ggml type its mixture gives each tensor (a tensor it leaves
    unquantized keeps its values)."""
    faces: list[Face] = [{} for _ in config.schemes]
    for t in targets:
        for face, scheme in zip(faces, cells[t.tensor_name].items()):
            face[t.module_name] = scheme
    return faces


def _check_output(out_dir, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FlipGuardError(f"{out} already exists; choose another output directory or pass --force.")
    if out.exists() and not out.is_dir():
        raise FlipGuardError(f"{out} exists and is not a directory; choose another output path.")
    return out


def _load_attackable(model_dir, skip_modules):
    """The model (float32, CPU), its tokenizer, its quantized targets and its stored dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flipguard.checkpoint import open_checkpoint, quantizable_tensors

    checkpoint = open_checkpoint(model_dir)
    targets = quantizable_tensors(checkpoint, skip_modules)
    if not targets:
        raise FlipGuardError(f"{model_dir} has no weight that bitsandbytes would quantize; "
                             "attack a model with nn.Linear or Conv1D layers.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as err:
        raise FlipGuardError(f"cannot load the tokenizer in {model_dir} ({err}); "
                             "save the model's tokenizer beside its weights.") from None
    if not getattr(tokenizer, "chat_template", None):
        raise FlipGuardError(f"the tokenizer in {model_dir} has no chat template; the attack formats "
                             "its data with apply_chat_template, so use an instruct tokenizer.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map="cpu",
                                                 use_safetensors=True, local_files_only=True)
    return model, tokenizer, targets, targets[0].dtype


def _train(model, tokenizer, examples, steps, lr, config, trainable, projection, progress, stage):
    from flipguard.zoo import train_causal_lm

    if steps == 0:
        return []
    losses = train_causal_lm(model, tokenizer, examples, steps, lr=lr,
                             batch_size=config.batch_size, seed=config.seed,
                             trainable_params=trainable, after_step=projection, progress=progress)
    tail = losses[-20:]
    return {"first": losses[0], "last_20_mean": sum(tail) / len(tail), "steps": len(losses)}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "tokenizer.model")


def _keep_tokenizer_files(source: Path, out: Path) -> None:
    """The input's tokenizer files, byte for byte, over what ``save_pretrained`` wrote: transformers
    may rewrite a tokenizer.json on save (a Qwen2 tokenizer gains a normalizer and a split
    pre-tokenizer), and the attacked model must tokenize as the clean one does, in every engine."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def _save_verified(model, tokenizer, dtype, boxed: list[BoxedWeight], out: Path,
                   report: AttackReport, progress: bool) -> None:
    """Save to a temporary sibling, verify by a real quantized load, write the report, rename."""
    from flipguard.attack.verify import verify_checkpoint

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with report.timed("save"):
            device = next(model.parameters()).device
            model.to("cpu", dtype).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            _keep_tokenizer_files(Path(report.model), tmp)
            model.to(device, torch.float32)
        with report.timed("verify"):
            if is_gguf(report.config["scheme"]):
                from flipguard.attack.gguf_verify import verify_gguf

                expected = {b.tensor_name: (name, b.load_dtypes[name], target, b.transposed)
                            for b in boxed for name, target in b.targets.items()}
                report.verification = verify_gguf(tmp, report.config["scheme"], report.config["outtype"], expected)
            else:
                expected = {name: {b.module_name: b.targets[name] for b in boxed}
                            for name in (boxed[0].targets if boxed else {})}
                report.verification = verify_checkpoint(tmp, expected, progress)
        report.write(tmp / REPORT_FILE)
        move_into_place(tmp, out, force=True)  # swaps an existing output (overwrite checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
