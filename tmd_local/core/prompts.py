"""The paper's four prompts (appendix A) as data, and the one renderer used by training and inference.

Deviations from the paper's text, kept small and deliberate (PROMPT_VERSION names them):
- the Reasoner's example answers read 'A', 'B' instead of 'ending0', 'ending1' because our options
  are letters, and it ends with the DRD prompt's "Final Answer:" line so both systems answer in one
  parseable format;
- options are listed one per line as "A. text".
"""

from __future__ import annotations

from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .records import Question
from .roles import ROLES  # noqa: F401 - re-exported for older imports

PROMPT_VERSION = "paper-appendix-a/letters-v1"
NO_DECOMPOSITION = "No decomposition"

ANALYZER = (
    "Your task is to break down a given complex question into the most relevant and helpful "
    "subquestions. You will also consider the provided options to generate subquestions that aid in "
    "understanding and solving the main question effectively. Only return subquestions that directly "
    "aid in answering the original question, avoiding any that could be harmful or irrelevant. If the "
    "question does not need breaking down to be answered, return 'No decomposition'. Otherwise, "
    "strictly list the necessary subquestions.\n\nQuestion: {question}\nOptions:\n{options}"
)

INFORMANT = (
    "You are an expert assistant with a vast knowledge base. For the given question, provide a short, "
    "concise, and relevant background without adding any extra information or questions.\n\n"
    "Question: {subquestion}\nWrite Relevant Knowledge"
)

REASONER = (
    "You are an expert assistant specializing in reasoning and providing structured answers. Given a "
    "main question, options, subquestions, and relevant knowledge, determine the correct option based "
    "on the reasoning process. Strictly adhere to the provided format. Provide the final answer as one "
    "of the given options (e.g., {examples}). Keep the reasoning concise and structured.\n\n"
    "Main Question: {question}\nOptions:\n{options}\n"
    "Subquestions and Relevant Knowledge:\n{knowledge}\n\n"
    "After the numbered reasoning, conclude with the Final Answer using the format:\n"
    "Final Answer: [Correct Option Letter]\n\nWrite Reasoning and Final Answer"
)

DRD = (
    "You are given a multiple-choice question and possible answer options. Your task is to reason "
    "through the question in a clear, structured way using numbered steps. Each step should be "
    "factual, concise, and contribute to evaluating the correctness of the options. The reasoning "
    "should resemble a scientific or biological explanation if relevant. After the numbered "
    "reasoning, conclude with the Final Answer using the format:\n\n"
    "Final Answer: [Correct Option Letter]\n\nQuestion: {question}\nOptions:\n{options}\n\n"
    "Write Reasoning and Final Answer"
)


def format_options(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def format_knowledge(subquestions: list[str], knowledge: list[str]) -> str:
    if not subquestions:
        return "None (the question needs no decomposition)."
    blocks = [f"{i}. {sq}\nKnowledge: {kn.strip()}"
              for i, (sq, kn) in enumerate(zip(subquestions, knowledge), start=1)]
    return "\n".join(blocks)


def format_subquestions(subquestions: list[str]) -> str:
    """The Analyzer's target text: a numbered list, or the paper's fallback phrase."""
    if not subquestions:
        return NO_DECOMPOSITION
    return "\n".join(f"{i}. {sq}" for i, sq in enumerate(subquestions, start=1))


def analyzer_messages(q: Question) -> list[dict]:
    return [_user(ANALYZER.format(question=q.question, options=format_options(q.options)))]


def informant_messages(subquestion: str) -> list[dict]:
    return [_user(INFORMANT.format(subquestion=subquestion))]


def reasoner_messages(q: Question, subquestions: list[str], knowledge: list[str]) -> list[dict]:
    examples = ", ".join(f"'{letter}'" for letter in list(q.options)[:2])
    text = REASONER.format(question=q.question, options=format_options(q.options), examples=examples,
                           knowledge=format_knowledge(subquestions, knowledge))
    return [_user(text)]


def drd_messages(q: Question) -> list[dict]:
    return [_user(DRD.format(question=q.question, options=format_options(q.options)))]


def mc_context(q: Question, facts: list[str] = ()) -> str:
    """The plain-text context the `mc` baseline scores each option's text after (no chat template,
    as lm-evaluation-harness does for a base model); `facts`, when given, come first on one line."""
    known = " ".join(" ".join(f.split()) for f in facts if f and f.strip())
    return (f"Facts: {known}\n" if known else "") + f"Question: {q.question.strip()}\nAnswer:"


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


# --- rendering -------------------------------------------------------------------------------
# Training (transformers) and inference (llama.cpp) both render prompts here, from the chat
# template stored in the model itself, so the two can never disagree on the prompt format.

def render_messages(messages: list[dict], chat_template: str, *, bos_token: str = "",
                    eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """Render chat messages to the exact prompt text, as transformers' apply_chat_template does."""
    template = _compile(chat_template)
    return template.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                           add_generation_prompt=add_generation_prompt)


@lru_cache(maxsize=8)
def _compile(chat_template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template)
