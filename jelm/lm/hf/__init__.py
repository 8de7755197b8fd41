"""Local Hugging Face checkpoints and jelm's diff model (ELM §3.1), both directions.

The paper's diff models are CodeGen-style models fine-tuned on commits. jelm downloads
nothing, but reads a user's local ``save_pretrained`` directory of the GPT-2, CodeGen,
Llama or Qwen2 family into its Flax model (:func:`load_hf`, :mod:`jelm.lm.hf.load`), and
writes a jelm model as a checkpoint of the family its layout matches (:func:`save_hf`,
:mod:`jelm.lm.hf.export`), so torch tooling can run jelm's diff models. transformers 5 has
no Flax model classes: only its config and tokenizer classes are used; the weights go
through safetensors.
"""

from jelm.lm.hf.export import (
    codegen_export_problems,
    codegen_qkv_weight,
    codegen_state_dict,
    gpt2_export_problems,
    gpt2_state_dict,
    llama_export_problems,
    llama_state_dict,
    save_hf,
)
from jelm.lm.hf.load import (
    CODEGEN_MP_NUM,
    SUPPORTED_MODEL_TYPES,
    codegen_qkv_kernel,
    load_hf,
    load_hf_params,
)

__all__ = [
    "CODEGEN_MP_NUM",
    "SUPPORTED_MODEL_TYPES",
    "codegen_export_problems",
    "codegen_qkv_kernel",
    "codegen_qkv_weight",
    "codegen_state_dict",
    "gpt2_export_problems",
    "gpt2_state_dict",
    "llama_export_problems",
    "llama_state_dict",
    "load_hf",
    "load_hf_params",
    "save_hf",
]
