"""Does an exported GGUF compute what the merged HF model computes?

The HF side (torch) runs once per module and is stored as a small JSON "reference": for a few
teacher-forced texts (the module prompts with plausible answers, rendered by the model's own chat
template) the token ids and the argmax of the logits at every position, plus greedy continuations
of two prompts. The llama.cpp side loads the GGUF (and the LoRA GGUF in adapter mode), evaluates
the same token ids with logits for every position, and counts positions whose argmax agrees.
It also generates greedily from the same prompts (side by side) and answers a chat message through
llama-cpp-python's own use of the GGUF's chat template, i.e. with nothing but the file.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tmd_local.core.errors import TmdError
from tmd_local.core.prompts import (analyzer_messages, drd_messages, informant_messages, reasoner_messages,
                               render_messages)
from tmd_local.core.records import Question

REFERENCE_VERSION = 1
GEN_TOKENS = 32
SAMPLE = Question("tmd-export-check", "Would a pear sink in water?", {"A": "yes", "B": "no"}, "B")
SUBQUESTIONS = ["What is the density of a pear?", "What is the density of water?"]
KNOWLEDGE = ["A pear is mostly water with air pockets; its density is about 0.6 g/cm3.",
             "Water has a density of about 1 g/cm3."]
REASONING = ("1. A pear has a density of about 0.6 g/cm3.\n2. Water has a density of about 1 g/cm3.\n"
             "3. An object less dense than water floats, so a pear does not sink.\nFinal Answer: B")


def role_messages(role: str) -> list[dict]:
    return {"analyzer": analyzer_messages(SAMPLE),
            "informant": informant_messages(SUBQUESTIONS[0]),
            "reasoner": reasoner_messages(SAMPLE, SUBQUESTIONS, KNOWLEDGE),
            "drd": drd_messages(SAMPLE)}.get(role) or drd_messages(SAMPLE)


def teacher_forced_texts() -> list[tuple[str, list[dict], str]]:
    """(label, messages, target) for every module's prompt: each checked module sees all four."""
    return [("analyzer", analyzer_messages(SAMPLE), "\n".join(f"{i}. {q}" for i, q in enumerate(SUBQUESTIONS, 1))),
            ("informant", informant_messages(SUBQUESTIONS[0]), KNOWLEDGE[0]),
            ("reasoner", reasoner_messages(SAMPLE, SUBQUESTIONS, KNOWLEDGE), REASONING),
            ("drd", drd_messages(SAMPLE), REASONING)]


def generation_prompts(role: str) -> list[tuple[str, list[dict]]]:
    return [(f"{role} prompt", role_messages(role)),
            ("chat", [{"role": "user", "content": "What is the capital of France?"}])]


def compute_reference(model, tokenizer, role: str, threads: int | None = None) -> dict:
    """The merged HF model's side of the comparison (torch)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    template = tokenizer.chat_template
    if not template:
        raise TmdError("the tokenizer has no chat template, so the GGUF would have none; "
                       "tmd needs it to build prompts")
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    if tokenizer.eos_token_id is None:
        raise TmdError("the tokenizer has no EOS token")
    started = time.perf_counter()
    texts, gens = [], []
    model.eval()
    with torch.no_grad():
        for label, messages, target in teacher_forced_texts():
            text = render_messages(messages, template, bos_token=bos, eos_token=eos) + target + eos
            ids = tokenizer(text, add_special_tokens=False).input_ids
            logits = model(torch.tensor([ids])).logits[0]
            texts.append({"label": label, "text": text, "ids": ids,
                          "argmax": logits.argmax(-1).tolist()})
        for label, messages in generation_prompts(role):
            prompt = render_messages(messages, template, bos_token=bos, eos_token=eos)
            ids = tokenizer(prompt, add_special_tokens=False).input_ids
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=GEN_TOKENS, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
            new = out[0][len(ids):].tolist()
            gens.append({"label": label, "messages": messages, "prompt_ids": ids, "new_ids": new,
                         "text": tokenizer.decode(new, skip_special_tokens=True).strip()})
    return {"version": REFERENCE_VERSION, "role": role, "texts": texts, "generations": gens,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "eos_token_id": int(tokenizer.eos_token_id), "seconds": time.perf_counter() - started}


def check_gguf(model_path: Path, reference: dict, lora_path: Path | None = None,
               threads: int | None = None) -> dict:
    """llama.cpp's side: top-1 agreement on the reference texts, greedy generations, a chat answer."""
    from llama_cpp import Llama

    needed = max([len(t["ids"]) for t in reference["texts"]] +
                 [len(g["prompt_ids"]) + GEN_TOKENS for g in reference["generations"]])
    n_ctx = max(512, -(-needed // 256) * 256)
    started = time.perf_counter()
    kwargs = dict(model_path=str(model_path), n_ctx=n_ctx, n_batch=512, logits_all=True, seed=0,
                  verbose=False)
    if threads:
        kwargs["n_threads"] = threads
    if lora_path is not None:
        kwargs["lora_path"] = str(lora_path)
    from .quant import captured_llama_log

    with captured_llama_log() as log:  # llama.cpp's warnings (e.g. LoRA on repacked q4_K) stay quiet
        try:
            llm = Llama(**kwargs)
        except (ValueError, RuntimeError) as e:
            what = f"{model_path.name} + {lora_path.name}" if lora_path else model_path.name
            errors = [ln.strip() for ln in "".join(log).splitlines() if "error" in ln.lower()]
            raise TmdError(f"llama.cpp could not load {what} ({e}{'; ' + errors[-1] if errors else ''})") from None
        return _check_loaded(llm, reference, started)


def _check_loaded(llm, reference: dict, started: float) -> dict:
    try:
        agree = total = 0
        per_text, tokenizer_match = {}, True
        for t in reference["texts"]:
            ids = t["ids"]
            tokenizer_match &= llm.tokenize(t["text"].encode("utf-8"), add_bos=False, special=True) == ids
            llm.reset()
            llm.eval(ids)
            pred = llm.scores[:len(ids)].argmax(axis=-1).tolist()
            hits = sum(int(a == b) for a, b in zip(pred, t["argmax"]))
            per_text[t["label"]] = round(hits / len(ids), 4)
            agree += hits
            total += len(ids)
        generations = []
        stop = {llm.token_eos(), reference["eos_token_id"]}
        for g in reference["generations"]:
            new = []
            for token in llm.generate(g["prompt_ids"], temp=0.0, repeat_penalty=1.0, reset=True):
                if token in stop:
                    break
                new.append(token)
                if len(new) >= GEN_TOKENS:
                    break
            ref_new = [x for x in g["new_ids"] if x != reference["eos_token_id"]][:GEN_TOKENS]
            prefix = 0
            for a, b in zip(new, ref_new):
                if a != b:
                    break
                prefix += 1
            generations.append({"label": g["label"], "match": new == ref_new, "common_prefix": prefix,
                                "tokens": len(new), "hf_text": g["text"],
                                "text": llm.detokenize(new).decode("utf-8", errors="replace").strip()})
        llm.reset()
        chat = llm.create_chat_completion(reference["generations"][-1]["messages"], max_tokens=GEN_TOKENS,
                                          temperature=0.0, repeat_penalty=1.0, seed=0)
        chat_answer = (chat["choices"][0]["message"]["content"] or "").strip()
    finally:
        llm.close()
    return {"top1_agreement": round(agree / total, 5) if total else 0.0, "positions": total,
            "per_text": per_text, "tokenizer_match": bool(tokenizer_match),
            "generations": generations, "chat_answer": chat_answer,
            "seconds": round(time.perf_counter() - started, 2)}
