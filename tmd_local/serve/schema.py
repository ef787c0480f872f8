"""What clients send: request bodies, and the question + options read out of a chat message."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..core.records import Question

SERVED_SYSTEMS = ("tmd", "drd", "mc")  # the gold-* systems need dataset annotations, not served
MAX_OPTIONS = 26
MAX_OPTION_CHARS = 1000
MAX_TOKENS_LIMIT = 4096


class BadRequest(ValueError):
    """A request the server understood but cannot answer; the app replies 422 with the message."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


Options = dict[str, str] | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    # OpenAI clients send fields tmd has no use for (top_p, presence_penalty...): accepted, ignored.
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    options: Options | None = None  # extra field: the options, when the message does not list them
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="tmd answers once per request")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    options: Options
    system: Literal["tmd", "drd", "mc"] = "tmd"
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None
    id: str | None = Field(None, max_length=200)


def normalize_options(value: Options, param: str = "options") -> dict[str, str]:
    """{"A": "yes", "B": "no"} or ["yes", "no"] (lettered A, B, ...) -> letter -> text."""
    if isinstance(value, list):
        if len(value) > MAX_OPTIONS:
            raise BadRequest(f"{param}: at most {MAX_OPTIONS} options, got {len(value)}", param)
        value = {chr(ord("A") + i): text for i, text in enumerate(value)}
    options = {}
    for letter, text in value.items():
        key = letter.strip().upper()
        if len(key) != 1 or not "A" <= key <= "Z":
            raise BadRequest(f"{param}: option key {letter!r} is not a single letter A-Z", param)
        if key in options:
            raise BadRequest(f"{param}: letter {key} given twice", param)
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f"{param}: option {key} is empty", param)
        if len(text) > MAX_OPTION_CHARS:
            raise BadRequest(f"{param}: option {key} is longer than {MAX_OPTION_CHARS} characters", param)
        options[key] = " ".join(text.split())
    if len(options) < 2:
        raise BadRequest(f"{param}: give at least two options, e.g. {{\"A\": \"yes\", \"B\": \"no\"}}", param)
    return options


# --- a question and its options from a chat message --------------------------------------------

_LETTERED_LINE = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]\.:]\s+(\S.*?)\s*$")
_INLINE = re.compile(r"\(([A-Z])\)\s*")
_OPTIONS_HEADER = re.compile(r"^\s*(options|choices|answer choices|answers)\s*:?\s*$", re.I)
_QUESTION_PREFIX = re.compile(r"^\s*question\s*:\s*", re.I)


def message_text(message: ChatMessage) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "\n".join(part.get("text", "") for part in parts if part.get("type") == "text")


def question_from_chat(request: ChatRequest, qid: str) -> Question:
    """The last user message is the question; its options are listed in it ("A. ..." one per line,
    or inline "(A) ... (B) ...") unless the request's `options` field gives them."""
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise BadRequest("messages: no user message; the last user message is the question", "messages")
    text = message_text(users[-1]).strip()
    if request.options is not None:
        return _question(qid, text, normalize_options(request.options))
    question, options = split_options(text)
    if not options:
        raise BadRequest("messages: no answer options found in the last user message; list them one "
                         "per line as 'A. text', inline as '(A) text (B) text', or pass them in the "
                         "request's \"options\" field", "messages")
    return _question(qid, question, options)


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """(question, options) from a message ending in lettered options; ({}: none found)."""
    lines = text.splitlines()
    start = len(lines)
    while start > 0 and _LETTERED_LINE.match(lines[start - 1]):
        start -= 1
    found = [_LETTERED_LINE.match(line) for line in lines[start:]]
    if _consecutive([m.group(1) for m in found]):
        head = lines[:start]
        while head and (not head[-1].strip() or _OPTIONS_HEADER.match(head[-1])):
            head.pop()
        return _QUESTION_PREFIX.sub("", "\n".join(head)).strip(), \
            {m.group(1).upper(): m.group(2) for m in found}
    pieces = _INLINE.split(text)  # [question, "A", text, "B", text, ...]
    if len(pieces) >= 5 and _consecutive(pieces[1::2]):
        options = {letter: body.strip() for letter, body in zip(pieces[1::2], pieces[2::2])}
        if all(options.values()):
            return _QUESTION_PREFIX.sub("", pieces[0]).strip(), options
    return text, {}


def _consecutive(letters: list[str]) -> bool:
    """A, B, C... from A (so a stray 'I: ...' line in a question is not taken for an option)."""
    return len(letters) >= 2 and [x.upper() for x in letters] == [chr(ord("A") + i) for i in range(len(letters))]


def _question(qid: str, text: str, options: dict[str, str]) -> Question:
    if not text.strip():
        raise BadRequest("messages: the question is empty (only options were found)", "messages")
    return Question(qid, text.strip(), normalize_options(options))


def answer_question(request: AnswerRequest, qid: str) -> Question:
    if not request.question.strip():
        raise BadRequest("question: empty", "question")
    return Question(request.id or qid, request.question.strip(), normalize_options(request.options))
