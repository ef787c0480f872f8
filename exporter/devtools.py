"""Stand-in inputs for developing and testing the exporter without a training run.

`make_random_lora` writes a folder shaped like the trainer's output (docs/FORMATS.md section 3): a peft
adapter with non-zero lora_B (so merging really changes the model), the tokenizer, and tmd.json.
`make_tiny_llama` writes a small random Llama model that shares SmolLM2's tokenizer, so llama.cpp's
converter recognises its vocabulary. `make_reference_tokenizer` and `make_tiny_model` do the same for
other families with their real tokenizers (see below). They import torch: only tests and dev scripts
call them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_random_lora(base_dir: Path, out_dir: Path, module: str, *, base_name: str | None = None,
                     seed: int = 0, r: int = 16, alpha: int = 8, b_std: float = 0.02,
                     teacher: str = "random-dev", prompt_version: str | None = None) -> Path:
    """A peft LoRA on the HF model in `base_dir`, with random lora_B of std `b_std`, saved to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tmd_local import __version__
    from tmd_local.core.formats import AdapterMeta
    from tmd_local.core.jsonl import write_json_atomic
    from tmd_local.core.prompts import PROMPT_VERSION

    from .merge import quiet_transformers

    quiet_transformers()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, b_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out_dir))
    meta = AdapterMeta(module=module, base=base_name or base_dir.name, base_source=str(base_dir),
                       teacher=teacher, data="none (random LoRA for development)", data_sha256=None,
                       hyperparameters={"r": r, "alpha": alpha, "targets": LORA_TARGETS, "b_std": b_std,
                                        "seed": seed},
                       tmd_version=__version__, prompt_version=prompt_version or PROMPT_VERSION)
    write_json_atomic(out_dir / "tmd.json", meta.to_json())
    return out_dir


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, *, hidden: int = 64, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, intermediate: int = 160, seed: int = 0) -> Path:
    """A random Llama with SmolLM2's tokenizer (copied from `tokenizer_dir`), saved in float32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return _save_randomized(LlamaForCausalLM(config), tokenizer, out_dir)


def _save_randomized(model, tokenizer, out_dir) -> Path:
    """Weights larger than the init default, so the logits are not all ties; saved with the tokenizer."""
    import torch

    model = model.to(torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


# --- other architectures, offline -------------------------------------------------------------
# Real tokenizers of other families, from the vocab-only GGUFs llama.cpp ships for its tokenizer
# tests (exporter.vendor.reference_file), with the chat templates it ships for its template tests.
# name -> (vocab GGUF, chat template, the EOS the family's tokenizer_config names, BOS or None)
REFERENCE_TOKENIZERS = {
    "llama-3": ("ggml-vocab-llama-bpe.gguf", "meta-llama-Llama-3.2-3B-Instruct.jinja", "<|eot_id|>",
                "<|begin_of_text|>"),
    "qwen2.5": ("ggml-vocab-qwen2.gguf", "Qwen-Qwen2.5-7B-Instruct.jinja", "<|im_end|>", None),
    "qwen3": ("ggml-vocab-qwen2.gguf", "Qwen-Qwen3-0.6B.jinja", "<|im_end|>", None),
    # Phi-3.5-mini shares Phi-3's tokenizer. Its EOS is <|endoftext|>; turns end with <|end|>, which
    # llama.cpp also ends generation on.
    "phi-3": ("ggml-vocab-phi-3.gguf", "microsoft-Phi-3.5-mini-instruct.jinja", "<|endoftext|>", "<s>"),
}
# Phi-3's tokenizer_config: the special tokens after the SentencePiece vocabulary swallow the
# whitespace that follows them (rstrip), except <|endoftext|>; </s> is an rstrip non-special token.
# llama.cpp gives models named Phi-3 the same attributes (src/llama-vocab.cpp).
PHI3_NO_RSTRIP = {"<unk>", "<s>", "<|endoftext|>"}
LLAMA_CONTROL = 3  # llama.cpp token type (tokenizer.ggml.token_type), as SentencePiece's


def make_reference_tokenizer(name: str, out_dir: Path) -> Path:
    """A Hugging Face tokenizer folder with a real family's vocabulary and chat template; a
    SentencePiece vocabulary also gets its tokenizer.model (what llama.cpp's converter reads)."""
    from transformers import AutoTokenizer

    from .vendor import reference_file

    vocab, template, eos, bos = REFERENCE_TOKENIZERS[name]
    gguf = reference_file(f"models/{vocab}")
    out_dir = Path(out_dir)
    if _gguf_fields(gguf, "tokenizer.ggml.model")["tokenizer.ggml.model"] == "llama":
        tokenizer = _sentencepiece_tokenizer(gguf, out_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.chat_template = reference_file(f"models/templates/{template}").read_text(encoding="utf-8")
    tokenizer.eos_token = eos
    tokenizer.bos_token = bos
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def _gguf_fields(path: Path, *names: str) -> dict:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    return {n: fields[n].contents() for n in names}


def sentencepiece_proto(gguf: Path):
    """The SentencePiece ModelProto (Llama 2's BPE conventions) of an SPM vocab GGUF: its pieces up to
    the last normal or byte piece; the tokens after them are the family's added tokens."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    f = _gguf_fields(gguf, "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                     "tokenizer.ggml.unknown_token_id")
    tokens, scores, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.scores"], f["tokenizer.ggml.token_type"]
    normal, byte = pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.BYTE
    size = 1 + max(i for i, t in enumerate(types) if t in (normal, byte))
    proto = pb.ModelProto()
    spec = proto.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, size, True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = (f["tokenizer.ggml.unknown_token_id"],
                                                          tokens.index("<s>"), tokens.index("</s>"), -1)
    norm = proto.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = (
        "identity", True, False, True)
    for i in range(size):
        piece = proto.pieces.add()
        piece.piece = tokens[i]
        if types[i] in (normal, byte):
            piece.score, piece.type = scores[i], types[i]
        else:  # the GGUF holds the HF added-token view of <unk>/<s>/</s>; in the model they are these
            piece.score = 0.0
            piece.type = (pb.ModelProto.SentencePiece.UNKNOWN if i == spec.unk_id
                          else pb.ModelProto.SentencePiece.CONTROL)
    return proto


def _sentencepiece_tokenizer(gguf: Path, out_dir: Path):
    """tokenizer.model written to out_dir, and the fast tokenizer Llama 2 and Phi-3 ship as
    tokenizer.json: byte-fallback BPE whose merges follow the piece scores (as SentencePiece merges),
    and the legacy normalizer that puts a "▁" before every stretch of text between special tokens, as
    SentencePiece and llama.cpp do. The class is the plain fast tokenizer: transformers' LlamaTokenizer
    would rebuild that pipeline with its own pre-tokenizer (no "▁" after a special token)."""
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    proto = sentencepiece_proto(gguf)
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    backend = Tokenizer(BPE(vocab, _bpe_merges(proto, vocab), unk_token=unk, fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk, bos_token="<s>",
                                        clean_up_tokenization_spaces=False)
    _add_phi3_tokens(tokenizer, gguf, first_added=len(proto.pieces))
    return tokenizer


def _add_phi3_tokens(tokenizer, gguf: Path, first_added: int) -> None:
    """The GGUF's control tokens past the SentencePiece pieces, with Phi-3's attributes (PHI3_NO_RSTRIP)."""
    from tokenizers import AddedToken

    f = _gguf_fields(gguf, "tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    control = [token for token, kind in zip(f["tokenizer.ggml.tokens"][first_added:],
                                            f["tokenizer.ggml.token_type"][first_added:]) if kind == LLAMA_CONTROL]
    tokenizer.add_tokens([AddedToken("</s>", rstrip=True, special=False, normalized=False)])
    tokenizer.add_special_tokens({"additional_special_tokens": [
        AddedToken(t, rstrip=t not in PHI3_NO_RSTRIP, special=True, normalized=False) for t in control]})


def _bpe_merges(proto, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two pieces, the best-scored result first."""
    normal = proto.pieces[0].NORMAL
    scored = [(p.score, piece[:k], piece[k:]) for p in proto.pieces if p.type == normal
              for piece in (p.piece,) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
    scored.sort(key=lambda m: -m[0])
    return [(left, right) for _, left, right in scored]


def make_tiny_model(family: str, out_dir: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A random 2-layer model of `family` (llama, qwen2, qwen3, gemma3, phi3), hidden 64, float32,
    saved with the tokenizer from `tokenizer_dir`."""
    import torch
    import transformers as tf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    configs = {
        "llama": lambda: (tf.LlamaConfig(**common), tf.LlamaForCausalLM),
        "qwen2": lambda: (tf.Qwen2Config(**common), tf.Qwen2ForCausalLM),
        "qwen3": lambda: (tf.Qwen3Config(head_dim=16, **common), tf.Qwen3ForCausalLM),
        "gemma3": lambda: (tf.Gemma3TextConfig(head_dim=16, sliding_window=64, query_pre_attn_scalar=16,
                                               **common), tf.Gemma3ForCausalLM),
        # Phi-3 pads its embeddings to 32064 rows, past the tokenizer's 32011 tokens; unlike the others
        # it has no tied output layer.
        "phi3": lambda: (tf.Phi3Config(**{**common, "vocab_size": -(-len(tokenizer) // 64) * 64,
                                          "tie_word_embeddings": False}), tf.Phi3ForCausalLM),
    }
    config, model_class = configs[family]()
    torch.manual_seed(seed)
    out_dir = _save_randomized(model_class(config), tokenizer, out_dir)
    if (Path(tokenizer_dir) / "tokenizer.model").is_file():  # save_pretrained leaves SentencePiece's out
        shutil.copyfile(Path(tokenizer_dir) / "tokenizer.model", out_dir / "tokenizer.model")
    return out_dir
