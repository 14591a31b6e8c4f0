"""The GGUF tokenizer metadata of a byte-level BPE tokenizer (the zoo's), from parsed JSON files.

Pure: ``tokenizer.json``, ``tokenizer_config.json`` and ``config.json`` dicts in, a list of
:class:`~flipguard.gguf.metadata.MetaValue` out. llama.cpp's converter recognises a pre-tokenizer
by hashing how it splits a test string and refuses the zoo's (unknown hash); its plain GPT-2
regex is what a ``ByteLevel(use_regex=True)`` pre-tokenizer does, so ``tokenizer.ggml.pre`` is
``"gpt-2"`` (measured: llama.cpp then splits zoo prompts exactly as transformers does; ``"default"``
mis-splits digits and punctuation). Token types follow the converter: added special tokens are
CONTROL, other added tokens USER_DEFINED, ids missing from the vocabulary UNUSED ``[PAD<i>]``.
"""

from __future__ import annotations

from flipguard.errors import FlipGuardError
from flipguard.gguf.metadata import MetaValue

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp token types (gguf TokenType)
PRE_TOKENIZER = "gpt-2"


def tokenizer_metadata(tokenizer: dict, tokenizer_config: dict, config: dict,
                       chat_template: str | None = None) -> list[MetaValue]:
    """``tokenizer.ggml.*`` (and ``tokenizer.chat_template``) for a byte-level BPE tokenizer.

    ``tokenizer`` is tokenizer.json, ``tokenizer_config`` tokenizer_config.json (``{}`` if absent),
    ``config`` config.json (its ``vocab_size`` sets the token count; special ids fall back to its
    ``*_token_id``), ``chat_template`` the text of chat_template.jinja if the checkpoint has one.
    Raises FlipGuardError for another kind of tokenizer.
    """
    _check_byte_level_bpe(tokenizer)
    vocab = dict(tokenizer["model"]["vocab"])
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    for token_id, entry in added.items():
        vocab[entry["content"]] = token_id
    n_vocab = int(config.get("vocab_size") or max(vocab.values()) + 1)
    if max(vocab.values()) >= n_vocab:
        raise FlipGuardError(f"the tokenizer has ids up to {max(vocab.values())} but the model has "
                             f"{n_vocab} embedding rows; the checkpoint is inconsistent.")
    tokens, types = _token_list(vocab, added, n_vocab)
    values = [
        MetaValue("tokenizer.ggml.model", "gpt2", "str"),
        MetaValue("tokenizer.ggml.pre", PRE_TOKENIZER, "str"),
        MetaValue("tokenizer.ggml.tokens", tokens, "str_array"),
        MetaValue("tokenizer.ggml.token_type", types, "i32_array"),
        MetaValue("tokenizer.ggml.merges", _merges(tokenizer["model"].get("merges", [])), "str_array"),
    ]
    values += _special_ids(vocab, tokenizer_config, config)
    add_bos, add_eos = _added_specials(tokenizer.get("post_processor"))
    values += [MetaValue("tokenizer.ggml.add_bos_token", add_bos, "bool"),
               MetaValue("tokenizer.ggml.add_eos_token", add_eos, "bool")]
    template = tokenizer_config.get("chat_template") or chat_template
    if isinstance(template, str) and template:
        values.append(MetaValue("tokenizer.chat_template", template, "str"))
    return values


def _check_byte_level_bpe(tokenizer: dict) -> None:
    """FlipGuardError unless tokenizer.json is a BPE with a plain GPT-2 byte-level pre-tokenizer."""
    model = tokenizer.get("model") or {}
    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    plain = (model.get("type") == "BPE" and tokenizer.get("normalizer") is None
             and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
             and not pre.get("add_prefix_space", False))
    if not plain:
        raise FlipGuardError("FlipGuard's GGUF converter handles byte-level BPE tokenizers with the "
                             "GPT-2 pre-tokenizer only (the zoo's); this tokenizer.json is another kind.")


def _token_list(vocab: dict[str, int], added: dict[int, dict], n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types for ids ``0 .. n_vocab-1``."""
    by_id = {i: token for token, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = by_id[i]
        tokens.append(token)
        if i in added:
            special = added[i].get("special") or (token.startswith("<|") and token.endswith("|>"))
            types.append(CONTROL if special else USER_DEFINED)
        else:
            types.append(NORMAL)
    return tokens, types


def _merges(merges: list) -> list[str]:
    """Merges as ``"a b"`` strings (tokenizers' newer ``[a, b]`` pairs joined; a space inside a part
    written as U+0120-style ``chr(ord(" ") + 256)``, as gguf-py does)."""
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        else:
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in merge))
    return out


def _special_ids(vocab: dict[str, int], tokenizer_config: dict, config: dict) -> list[MetaValue]:
    """bos/eos/pad/unk ids: tokenizer_config's token strings, else config.json's ids."""
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "padding_token_id", "unk": "unknown_token_id"}
    values = []
    for kind, gguf_key in keys.items():
        token = tokenizer_config.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        token_id = vocab.get(token) if isinstance(token, str) else config.get(f"{kind}_token_id")
        if isinstance(token_id, int) and token_id >= 0:
            values.append(MetaValue(f"tokenizer.ggml.{gguf_key}", token_id, "u32"))
    return values


def _added_specials(post_processor: dict | None) -> tuple[bool, bool]:
    """Whether encoding adds a leading (bos) / trailing (eos) special token, from the post-processor."""
    if not post_processor:
        return False, False
    processors = post_processor.get("processors", [post_processor])
    add_bos = add_eos = False
    for processor in processors:
        if processor.get("type") == "TemplateProcessing":
            single = processor.get("single", [])
            add_bos = bool(single) and "SpecialToken" in single[0]
            add_eos = bool(single) and "SpecialToken" in single[-1]
        elif processor.get("type") not in ("ByteLevel",):
            raise FlipGuardError(f"tokenizer post-processor {processor.get('type')!r} is not one FlipGuard's "
                                 "GGUF converter understands.")
    return add_bos, add_eos
