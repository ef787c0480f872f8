"""`tmd export --ollama`: one Ollama Modelfile per module of a bundle, and a note on `ollama create`.

Ollama renders prompts with a Go template, not the model's Jinja chat template, so the TEMPLATE is
derived from the chat template stored in each GGUF: it is rendered on probe conversations whose
contents are markers, and what surrounds each marker gives the text before and after a system,
user and assistant message, the default preamble (e.g. a default system prompt) and the generation
prompt. Before a Modelfile is written, its TEMPLATE is rendered (exporter/gotemplate.py) on every
tmd prompt and must equal tmd_local.core.prompts.render_messages exactly; otherwise the export stops.
A BOS the GGUF's tokenizer adds by itself (tokenizer.ggml.add_bos_token) is left out of the
TEMPLATE, as llama.cpp under Ollama would otherwise put it twice. The stop parameters are the
model's end-of-generation tokens as llama.cpp lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tmd_local.core import prompts
from tmd_local.core.errors import TmdError
from tmd_local.core.records import Question

from .gotemplate import render_go

OLLAMA_DIR = "ollama"
_MARK = "\x02{}\x03"  # message contents no chat template alters


@dataclass(frozen=True)
class ChatTokens:
    """What a GGUF's tokenizer says about its chat format."""
    chat_template: str
    bos: str
    eos: str
    adds_bos: bool
    stops: tuple[str, ...]


@dataclass(frozen=True)
class ChatFormat:
    """The text around each message, as the chat template lays it out."""
    preamble: str         # before the first message when there is no system message
    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str       # the assistant turn's opening, after the last message
    leading_bos: str      # stripped from every rendering (the tokenizer adds it)
    system_supported: bool

    def go_template(self) -> str:
        """Ollama's TEMPLATE: the Messages form (chat) and the Prompt form (generate)."""
        for text in (self.preamble, *self.system, *self.user, *self.assistant, self.generation):
            if "{{" in text or '"""' in text:
                raise TmdError(f"the chat template produces {text!r}, which a Modelfile TEMPLATE cannot hold")
        system = (f'{{{{ if eq .Role "system" }}}}{self.system[0]}{{{{ .Content }}}}{self.system[1]}{{{{ else }}}}'
                  if self.system_supported else "")
        messages = (f"{{{{ if not .System }}}}{self.preamble}{{{{ end }}}}"
                    f"{{{{ range .Messages }}}}{system}"
                    f'{{{{ if eq .Role "user" }}}}{self.user[0]}{{{{ .Content }}}}{self.user[1]}'
                    f'{{{{ else if eq .Role "assistant" }}}}{self.assistant[0]}{{{{ .Content }}}}{self.assistant[1]}'
                    f"{{{{ end }}}}{'{{ end }}' if self.system_supported else ''}{{{{ end }}}}{self.generation}")
        system_prompt = (f"{{{{ if .System }}}}{self.system[0]}{{{{ .System }}}}{self.system[1]}{{{{ else }}}}"
                         f"{self.preamble}{{{{ end }}}}" if self.system_supported else self.preamble)
        prompt = f"{system_prompt}{self.user[0]}{{{{ .Prompt }}}}{self.user[1]}{self.generation}"
        return f"{{{{ if .Messages }}}}{messages}{{{{ else }}}}{prompt}{{{{ end }}}}"


def derive_format(tokens: ChatTokens) -> ChatFormat:
    """The chat format, read off renderings of probe conversations."""
    def render(messages, generation=True):
        text = prompts.render_messages(messages, tokens.chat_template, bos_token=tokens.bos,
                                       eos_token=tokens.eos, add_generation_prompt=generation)
        text = text[len(leading):] if leading and text.startswith(leading) else text
        # Some templates (Phi-3) end a conversation with EOS unless a generation prompt follows.
        return text[:-len(closing)] if closing and not generation and text.endswith(closing) else text

    u1, a1, u2, s1 = (_MARK.format(n) for n in ("u1", "a1", "u2", "s1"))
    user1 = [{"role": "user", "content": u1}]
    first = prompts.render_messages(user1, tokens.chat_template, bos_token=tokens.bos, eos_token=tokens.eos)
    leading = tokens.bos if tokens.adds_bos and tokens.bos and first.startswith(tokens.bos) else ""
    closing = ""
    one, one_open = render(user1, False), render(user1)
    if not one_open.startswith(one) and tokens.eos and one.endswith(tokens.eos):
        closing = tokens.eos
        one = one[:-len(closing)]
    if not one_open.startswith(one):
        raise TmdError("the chat template's generation prompt does not follow the conversation")
    generation = one_open[len(one):]
    head, user_after = one.split(u1)
    turns = render(user1 + [{"role": "assistant", "content": a1}, {"role": "user", "content": u2}], False)
    between_user_assistant = turns.split(u1)[1].split(a1)[0]
    between_assistant_user = turns.split(a1)[1].split(u2)[0]
    if not between_user_assistant.startswith(user_after):
        raise TmdError("the chat template lays out the first user message unlike the later ones")
    user_before = _user_opening(head, between_assistant_user, user_after)
    preamble = head[:len(head) - len(user_before)]
    assistant = (between_user_assistant[len(user_after):],
                 between_assistant_user[:len(between_assistant_user) - len(user_before)])
    system, supported = ("", ""), False
    try:
        with_system = render([{"role": "system", "content": s1}] + user1, False)
        sys_before, rest = with_system.split(s1)
        between = rest.split(u1)[0]
        if between.endswith(user_before):
            system, supported = (sys_before, between[:len(between) - len(user_before)]), True
    except Exception:  # noqa: BLE001 - a template that rejects system messages (raise_exception)
        supported = False
    return ChatFormat(preamble, system, (user_before, user_after), assistant, generation, leading, supported)


def _user_opening(head: str, after_assistant: str, user_closing: str) -> str:
    """The text that opens a user turn: what precedes both a first and a later user message. The
    split is ambiguous (any common suffix renders the same); prefer the one where an assistant turn
    closes as a user turn does, which reads as the template does."""
    if user_closing and after_assistant.startswith(user_closing):
        natural = after_assistant[len(user_closing):]
        if head.endswith(natural):
            return natural
    return _common_suffix(head, after_assistant)


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:]


def check_template(fmt: ChatFormat, tokens: ChatTokens) -> int:
    """Render every tmd prompt with the Go TEMPLATE and with tmd's renderer; they must be equal."""
    template = fmt.go_template()
    checked = 0
    for messages in sample_conversations():
        expected = prompts.render_messages(messages, tokens.chat_template, bos_token=tokens.bos,
                                           eos_token=tokens.eos)
        got = fmt.leading_bos + render_go(template, ollama_values(messages))
        if got != expected:
            raise TmdError(f"the Ollama TEMPLATE derived from the chat template renders a tmd prompt "
                           f"differently:\n  template: {expected[:160]!r}\n  Ollama:   {got[:160]!r}")
        checked += 1
    return checked


def ollama_values(messages: list[dict]) -> dict:
    """What Ollama hands a TEMPLATE for a chat request: Messages (Role, Content) and System."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages], "System": system}


def sample_conversations() -> list[list[dict]]:
    """The four tmd prompts on a sample question (what the modules are sent)."""
    q = Question("sample", "Could a penguin live in the Sahara?", {"A": "yes", "B": "no"})
    subquestions = ["Where do penguins live?", "How hot is the Sahara?"]
    knowledge = ["Penguins live in cold southern waters.", "The Sahara is a hot desert."]
    return [prompts.analyzer_messages(q), prompts.informant_messages(subquestions[0]),
            prompts.reasoner_messages(q, subquestions, knowledge), prompts.drd_messages(q)]


def read_chat_tokens(path: Path) -> ChatTokens:
    """The chat template, BOS/EOS text, whether BOS is added, and end-of-generation tokens of a GGUF."""
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        meta = llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise TmdError(f"{path}: the GGUF has no tokenizer.chat_template")

        def text(token_id: int) -> str:
            return llm.detokenize([token_id], special=True).decode("utf-8", errors="replace") if token_id >= 0 else ""

        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        stops = tuple(dict.fromkeys(text(i) for i in range(llm.n_vocab())
                                    if llama_cpp.llama_vocab_is_eog(vocab, i)))
        adds_bos = str(meta.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
        return ChatTokens(template, text(llm.token_bos()), text(llm.token_eos()), adds_bos,
                          tuple(s for s in stops if s))
    finally:
        llm.close()


def modelfile_text(gguf: str, adapter: str | None, fmt: ChatFormat, tokens: ChatTokens, *, n_ctx: int,
                   num_predict: int, role: str, label: str) -> str:
    lines = [f"# tmd {role} module of {label}; TEMPLATE derived from the GGUF's chat template and checked",
             "# to render every tmd prompt exactly as tmd does (greedy decoding, as tmd runs it)."]
    if not fmt.system_supported:
        lines.append("# System messages: this model's template folds them into a user turn; the TEMPLATE "
                     "leaves them out (tmd sends none).")
    lines.append(f"FROM {gguf}")
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f'TEMPLATE """{fmt.go_template()}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in tokens.stops]
    lines += [f"PARAMETER num_ctx {n_ctx}", f"PARAMETER num_predict {num_predict}",
              "PARAMETER temperature 0", "PARAMETER repeat_penalty 1.1", "PARAMETER seed 0"]
    return "\n".join(lines) + "\n"


def write_modelfiles(bundle_dir: Path, *, quant: str | None = None, n_ctx: int = 2048,
                     name_prefix: str | None = None) -> list[Path]:
    """<bundle>/ollama/<role>.Modelfile for every role, and <bundle>/ollama/README.md."""
    from tmd_local.runtime.bundle import load_bundle
    from tmd_local.runtime.generation import GenerationSettings
    from tmd_local.core.roles import ROLES

    bundle = load_bundle(bundle_dir)
    modules = bundle.module_set(quant)
    out = Path(bundle_dir) / OLLAMA_DIR
    out.mkdir(parents=True, exist_ok=True)
    max_tokens = GenerationSettings().max_tokens
    prefix = name_prefix or f"tmd-{bundle.name}"
    formats: dict[Path, tuple[ChatFormat, ChatTokens]] = {}
    written = []
    for role in ROLES:
        ref = getattr(modules, role)
        if ref.path not in formats:
            tokens = read_chat_tokens(ref.path)
            fmt = derive_format(tokens)
            check_template(fmt, tokens)
            formats[ref.path] = (fmt, tokens)
        fmt, tokens = formats[ref.path]
        adapter = getattr(ref, "adapter", None)
        text = modelfile_text(_relative(ref.path, out), _relative(adapter, out) if adapter else None, fmt,
                              tokens, n_ctx=n_ctx, num_predict=max_tokens[role], role=role, label=modules.label)
        path = out / f"{role}.Modelfile"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    (out / "README.md").write_text(_note(prefix, modules.label), encoding="utf-8")
    return written


def parse_modelfile(text: str) -> dict:
    """{"FROM": str, "ADAPTER": str | None, "TEMPLATE": str, "PARAMETER": [(name, value)]} of a
    Modelfile as tmd writes it (TEMPLATE in triple quotes, one instruction per line otherwise)."""
    parsed: dict = {"ADAPTER": None, "PARAMETER": []}
    rest = text
    while rest:
        line, _, rest = rest.partition("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, value = line.strip().partition(" ")
        if word == "TEMPLATE" and value.startswith('"""'):
            body = value[3:] + "\n" + rest
            end = body.index('"""')
            parsed["TEMPLATE"], rest = body[:end], body[end + 3:].lstrip("\n")
        elif word == "PARAMETER":
            name, _, raw = value.partition(" ")
            parsed["PARAMETER"].append((name, json.loads(raw) if raw.startswith('"') else raw))
        else:
            parsed[word] = value
    return parsed


def _relative(path: Path, folder: Path) -> str:
    """Relative to the Modelfile when inside the bundle (the bundle can move), else absolute."""
    try:
        return "../" + Path(path).resolve().relative_to(folder.parent.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _note(prefix: str, label: str) -> str:
    roles = " ".join(prompts.ROLES)
    return (f"# {label} in Ollama\n\n"
            "One Modelfile per module. Create the models from this folder:\n\n"
            f"```\nfor role in {roles}; do ollama create {prefix}-$role -f $role.Modelfile; done\n```\n\n"
            "Each module expects tmd's own prompt for its role (tmd_local/core/prompts.py): a TMD answer is "
            f"{prefix}-analyzer, then {prefix}-informant per subquestion, then {prefix}-reasoner; DRD is "
            f"{prefix}-drd alone. Ollama renders messages with the TEMPLATE, which was checked to produce "
            "exactly the prompt tmd renders with the model's chat template. `tmd serve` runs the whole "
            "pipeline behind one OpenAI-compatible endpoint instead.\n")
