"""The student is trained on transformers' token ids and run by llama.cpp: both must turn the same
rendered prompt + target into the same ids, or the fine-tuned model sees a foreign prompt after
GGUF export. Checked on the embedded base: its dequantized HF tokenizer against the GGUF's vocab."""

from __future__ import annotations

import pytest

from tmd_local.core.prompts import render_messages
from trainer.data import build_examples, load_records

EXTRA_TEXTS = [
    "1. Is 3.14 > 22/7?\n2. What's the café's   \"menu\"?\nFinal Answer: B",
    "Ünïcödé — naïve façade, 東京, emoji 🙂, tabs\tand  double  spaces.\n\n\nNo decomposition",
    " leading space, trailing newline\n",
]


@pytest.fixture(scope="module")
def vocab(embedded_model):
    from llama_cpp import Llama

    llm = Llama(model_path=str(embedded_model.path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def cpp_ids(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def test_chat_template_and_special_tokens_match(vocab, tokenizer):
    assert tokenizer.chat_template == vocab.metadata["tokenizer.chat_template"]
    assert tokenizer.eos_token_id == vocab.token_eos()
    assert tokenizer.bos_token_id == vocab.token_bos()


@pytest.mark.parametrize("module", ["analyzer", "informant", "reasoner", "drd"])
def test_prompt_plus_target_tokenize_identically(vocab, tokenizer, teacher_dir, module):
    records = load_records(teacher_dir / f"{module}.jsonl", module)[:4]
    examples, _ = build_examples(records, tokenizer, 4096)
    for record, example in zip(records, examples):
        prompt = render_messages(record.messages, vocab.metadata["tokenizer.chat_template"],
                                 bos_token="<|im_start|>", eos_token="<|im_end|>")
        text = prompt + record.target
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == cpp_ids(vocab, text)
        # what training feeds the model is what llama.cpp will see at inference: the prompt
        # tokenized alone, then the target's tokens and EOS
        assert example.input_ids[:example.n_prompt] == cpp_ids(vocab, prompt)
        assert example.input_ids[example.n_prompt:] == cpp_ids(vocab, record.target) + [vocab.token_eos()]


@pytest.mark.parametrize("text", EXTRA_TEXTS)
def test_awkward_text_tokenizes_identically(vocab, tokenizer, text):
    messages = [{"role": "user", "content": text}]
    prompt = render_messages(messages, tokenizer.chat_template, eos_token=tokenizer.eos_token)
    for piece in (text, prompt + text):
        assert tokenizer(piece, add_special_tokens=False)["input_ids"] == cpp_ids(vocab, piece)


def test_dequantized_base_is_a_plain_hf_model_that_agrees_with_llama_cpp(hf_base, embedded_model, tokenizer):
    """The cached base holds plain fp32 weights (no GGUF quantizer left attached) and predicts the
    same next tokens as the GGUF it came from."""
    import json

    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    assert "quantization_config" not in json.loads((hf_base / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(hf_base), dtype=torch.float32).eval()
    assert getattr(model, "hf_quantizer", None) is None
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    prompt = render_messages(messages, tokenizer.chat_template)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
    hf_tokens = out[0, len(ids):].tolist()
    llm = Llama(model_path=str(embedded_model.path), n_ctx=256, verbose=False, seed=0)
    try:
        cpp_tokens = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            cpp_tokens.append(token)
            if len(cpp_tokens) == 4:
                break
    finally:
        llm.close()
    assert hf_tokens[:2] == cpp_tokens[:2], (tokenizer.decode(hf_tokens), tokenizer.decode(cpp_tokens))
