"""Turning free-form module output into subquestion lists and answer letters.

Small models wander off format, so both parsers accept many shapes and return "nothing" rather than
guess: an unparseable answer is None (scored wrong), never a random letter.
"""

from __future__ import annotations

import re

MAX_SUBQUESTIONS = 5

_ITEM_MARK = re.compile(
    r"^\s*(?:[-*•]+|\(?\d{1,2}[.):]|\#\d+[.):]?|(?:sub-?questions?|q)\s*\d*\s*[:.)-])\s*", re.I)
_HEADER = re.compile(r"^\s*(?:here are|the )?(?:the )?(?:relevant |necessary )?sub-?questions?\b.*:\s*$", re.I)
_NO_DECOMP = re.compile(r"no\s+decomposition", re.I)


def parse_subquestions(text: str, limit: int = MAX_SUBQUESTIONS) -> list[str]:
    """Subquestions from Analyzer output; [] for 'No decomposition' or when nothing usable is found."""
    items = [_strip_item(line) for line in text.splitlines()
             if line.strip() and not _HEADER.match(line)]
    items = [s for s in items if len(s) > 3]
    questions = [q for s in items for q in _split_questions(s)]
    if not questions:
        # No line ends in '?': fall back to explicitly listed items, unless the model declined.
        if _NO_DECOMP.search(text):
            return []
        questions = [s for line, s in zip(text.splitlines(), items) if _ITEM_MARK.match(line)]
    return _dedupe(questions)[:limit]


def _strip_item(line: str) -> str:
    return _ITEM_MARK.sub("", line.strip(), count=1).strip().strip('"').strip()


def _split_questions(line: str) -> list[str]:
    """'What is X? What is Y?' -> two questions; text after the last '?' is dropped."""
    parts = re.findall(r"[^?]*\?", line)
    return [p.strip() for p in parts if len(p.strip()) > 3]


def _dedupe(items: list[str]) -> list[str]:
    seen, out = set(), []
    for item in items:
        key = item.lower()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


# --- answers ---------------------------------------------------------------------------------

_FINAL = re.compile(r"final\s+answer\s*(?:is)?\s*[:\-]?\s*(.+)", re.I)
_ANSWER_IS = re.compile(
    r"(?:correct\s+|best\s+)?(?:answer|option|choice)\s+(?:is|would be|should be)\s*[:\-]?\s*(.+)", re.I)


def parse_answer(text: str, options: dict[str, str]) -> str | None:
    """The chosen option letter, or None when the output commits to no single option."""
    for pattern in (_FINAL, _ANSWER_IS):
        matches = pattern.findall(text)
        for candidate in reversed(matches):  # the last statement wins: models revise themselves
            letter = _match_option(candidate, options)
            if letter:
                return letter
    return _bare_option(text, options)


def _bare_option(text: str, options: dict[str, str]) -> str | None:
    """A last line that is just an option, e.g. "B", "(B)" or "B. a tundra"."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or len(lines[-1]) > 80:
        return None
    letters = "".join(re.escape(k) for k in options)
    m = re.match(rf"^[\[\(]?([{letters}])(?:[\]\).:]|$)", lines[-1])
    return m.group(1) if m else None


def _match_option(fragment: str, options: dict[str, str]) -> str | None:
    fragment = fragment.strip().strip("*").strip()
    letters = "".join(re.escape(k) for k in options)
    # "B", "(B)", "[B]", "Option B", "B.", "B: text" at the start of the fragment.
    # Capitals only: a lowercase "a" is usually the article ("a marsh"), unless bracketed: "(b)".
    m = (re.match(rf"^(?i:option\s+)?[\[\(\"']?\s*([{letters}])\s*[\]\)\"']?(?=$|[\s.,:;)\]!])", fragment)
         or re.match(rf"^(?:option\s+)?[\[\(]([{letters.lower()}])[\]\)]", fragment, re.I))
    if m:
        return m.group(1).upper()
    # The option's own text, e.g. "Final Answer: yes" or "Final Answer: a marsh".
    first_clause = re.split(r"[.\n]", fragment, maxsplit=1)[0].strip().lower().strip("'\"")
    by_text = [k for k, v in options.items() if v.strip().lower() == first_clause]
    if len(by_text) == 1:
        return by_text[0]
    # A single word answer for yes/no questions: "Final Answer: No, because ...".
    word = re.match(r"^([a-z]+)", first_clause)
    if word:
        hits = [k for k, v in options.items() if v.strip().lower() == word.group(1)]
        if len(hits) == 1:
            return hits[0]
    return None
