"""Ollama Modelfiles: the Go TEMPLATE derived from each family's chat template renders every tmd
prompt exactly as tmd_local.core.prompts.render_messages does; `tmd export --ollama` writes them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from exporter.gotemplate import render_go
from exporter.ollama import (ChatTokens, check_template, derive_format, ollama_values, parse_modelfile,
                             read_chat_tokens, sample_conversations)
from tmd_local.core.errors import TmdError
from tmd_local.core.prompts import render_messages

# Chat templates llama.cpp ships for its tests (from the same sdist as its converter), with each
# model's BOS/EOS text and whether its tokenizer adds BOS by itself.
FAMILY_TEMPLATES = {
    "llama-3.2": ("meta-llama-Llama-3.2-3B-Instruct", "<|begin_of_text|>", "<|eot_id|>", True),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct", "", "<|im_end|>", False),
    "qwen3": ("Qwen-Qwen3-0.6B", "", "<|im_end|>", False),
    "phi-3.5": ("microsoft-Phi-3.5-mini-instruct", "<s>", "<|endoftext|>", False),
    "gemma-2": ("google-gemma-2-2b-it", "<bos>", "<eos>", True),
}


def test_go_renderer_subset():
    template = '{{- if .System }}S:{{ .System }}\n{{ end -}}\n{{ range .Messages }}{{ if eq .Role "user" }}U:{{ .Content }}' \
               '{{ else if eq .Role "assistant" }}A:{{ .Content }}{{ else }}?{{ end }}|{{ end }}{{ if not .System }}none{{ end }}'
    messages = [{"Role": "user", "Content": "hi"}, {"Role": "assistant", "Content": "yo"}, {"Role": "tool", "Content": ""}]
    assert render_go(template, {"Messages": messages, "System": ""}) == "U:hi|A:yo|?|none"
    assert render_go(template, {"Messages": [], "System": "be brief"}) == "S:be brief\n"  # only -}} trims
    for bad in ("{{ if .X }}never closed", "{{ index .Messages 0 }}", "{{ .Messages.Role }}", "{{ end }}"):
        with pytest.raises(TmdError):
            render_go(bad, {"Messages": []})


def _chat_tokens(family: str) -> ChatTokens:
    from exporter.vendor import reference_file

    name, bos, eos, adds_bos = FAMILY_TEMPLATES[family]
    try:
        template = reference_file(f"models/templates/{name}.jinja").read_text(encoding="utf-8")
    except TmdError as e:
        pytest.skip(f"llama.cpp's reference templates unavailable: {e}")
    return ChatTokens(template, bos, eos, adds_bos, (eos,))


def _assert_renders_like_jinja(fmt, tokens, conversations):
    template = fmt.go_template()
    for messages in conversations:
        expected = render_messages(messages, tokens.chat_template, bos_token=tokens.bos, eos_token=tokens.eos)
        assert fmt.leading_bos + render_go(template, ollama_values(messages)) == expected


@pytest.mark.parametrize("family", list(FAMILY_TEMPLATES))
def test_template_of_each_family_renders_the_tmd_prompts(family):
    tokens = _chat_tokens(family)
    fmt = derive_format(tokens)
    assert check_template(fmt, tokens) == 4
    _assert_renders_like_jinja(fmt, tokens, sample_conversations())
    # Beyond tmd's single-turn prompts: a multi-turn chat, and a system message where the model has one.
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Is ice cold?"}]
    _assert_renders_like_jinja(fmt, tokens, [chat])
    if fmt.system_supported:
        _assert_renders_like_jinja(fmt, tokens, [[{"role": "system", "content": "Be brief."}] + chat])
    assert fmt.system_supported == (family != "gemma-2")  # Gemma folds a system message into the user turn
    assert fmt.leading_bos == (tokens.bos if tokens.adds_bos else "")


def test_embedded_model_template_and_stops(embedded_model):
    tokens = read_chat_tokens(embedded_model.path)
    assert "<|im_end|>" in tokens.stops and not tokens.adds_bos
    fmt = derive_format(tokens)
    assert check_template(fmt, tokens) == 4
    assert fmt.user == ("<|im_start|>user\n", "<|im_end|>\n") and fmt.generation == "<|im_start|>assistant\n"


@pytest.mark.slow
def test_export_ollama_writes_checked_modelfiles(tiny_adapters, tiny_base, converter, tmp_path):
    from tmd_local.cli import cli

    out = tmp_path / "tiny-ollama"
    result = CliRunner().invoke(cli, ["export", "--adapters", str(tiny_adapters), "--out", str(out),
                                      "--quant", "q8_0", "--base", str(tiny_base), "--threads", "1",
                                      "--zero-shot", "informant,reasoner,drd", "--min-agreement", "0.9",
                                      "--ollama"])
    assert result.exit_code == 0, result.output
    folder = out / "ollama"
    assert "ollama create" in (folder / "README.md").read_text()
    tokens = read_chat_tokens(out / "analyzer.q8_0.gguf")
    for role, messages in zip(("analyzer", "informant", "reasoner", "drd"), sample_conversations()):
        modelfile = parse_modelfile((folder / f"{role}.Modelfile").read_text())
        assert (folder / modelfile["FROM"]).resolve().is_file()
        params = dict(modelfile["PARAMETER"])
        assert params["num_ctx"] == "2048" and params["temperature"] == "0"
        assert "<|im_end|>" in [v for k, v in modelfile["PARAMETER"] if k == "stop"]
        rendered = render_go(modelfile["TEMPLATE"], ollama_values(messages))
        assert rendered == render_messages(messages, tokens.chat_template, bos_token=tokens.bos,
                                           eos_token=tokens.eos)
    assert parse_modelfile((folder / "analyzer.Modelfile").read_text())["FROM"] == "../analyzer.q8_0.gguf"
