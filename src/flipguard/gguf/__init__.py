"""GGUF files and llama.cpp: file layout, type mixtures, conversion and the llama.cpp runtime.

Pure layout logic (no file, no model)::

    ftypes.FTYPES, ftype(name) -> FType(name, id, default_type)
    ftypes.tensor_types(ftype, ModelShape(arch, n_layer, n_head, n_head_kv), [TensorSpec]) -> {name: type}
    names.tensor_map(config, hf_name) -> TensorMap | None;  names.hf_tensor_map(config, gguf_name)
    TensorMap.to_gguf / to_hf (values), gguf_coordinates / hf_coordinates (indices)
    metadata.architecture_metadata(config), vocab.tokenizer_metadata(...) -> [MetaValue]

Files (read by FlipGuard's own header walk, ``gguf.header``; converted with gguf-py, imported lazily)::

    convert_checkpoint(checkpoint_dir, output, outtype=None, force=False) -> Path
    open_gguf(path, float_only=False) -> GGUFFile (metadata, tensors, values(name))
    write_gguf(source, output, replacements, force=False) -> Path
    layout.predicted_types(opened_file, ftype) -> {name: ggml type}  (model_shape, tensor_specs)

llama.cpp (llama-cpp-python, imported lazily)::

    quantize_gguf(source, output, ftype, threads=1, force=False) -> Path
    load_llama(path, n_ctx=512, threads=1, seed=0) -> llama_cpp.Llama
    tokenize, token_logits, text_logits, greedy_generate
"""

from typing import TYPE_CHECKING

from flipguard.lazy import lazy_exports

if TYPE_CHECKING:
    from flipguard.gguf.convert import convert_checkpoint, default_outtype
    from flipguard.gguf.ftypes import FTYPES, FType, ModelShape, TensorSpec, ftype, tensor_types
    from flipguard.gguf.ggml_types import GGML_TYPES, GGMLType, ggml_type
    from flipguard.gguf.names import GGUF_ARCHES, TensorMap, hf_tensor_map, tensor_map
    from flipguard.gguf.reader import GGUFFile, GGUFTensor, bf16_to_float32, open_gguf
    from flipguard.gguf.runtime import (
        greedy_generate, load_llama, quantize_gguf, silence_llama, text_logits, token_logits, tokenize,
    )
    from flipguard.gguf.writer import write_gguf

__all__ = [
    "FTYPES", "FType", "GGML_TYPES", "GGMLType", "GGUFFile", "GGUFTensor", "GGUF_ARCHES", "ModelShape",
    "TensorMap", "TensorSpec", "bf16_to_float32", "convert_checkpoint", "default_outtype", "ftype",
    "ggml_type", "greedy_generate", "hf_tensor_map", "load_llama", "open_gguf", "quantize_gguf",
    "silence_llama", "tensor_map", "tensor_types", "text_logits", "token_logits", "tokenize", "write_gguf",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
