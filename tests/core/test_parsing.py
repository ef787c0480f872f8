import pytest

from tmd_local.core.parsing import MAX_SUBQUESTIONS, parse_answer, parse_subquestions

FOUR = {"A": "a marsh", "B": "a tundra", "C": "the plains", "D": "a desert"}
YES_NO = {"A": "yes", "B": "no"}


@pytest.mark.parametrize("text, expected", [
    ("Final Answer: B", "B"),
    ("1. Fog forms over water.\n2. Marshes are wet.\nFinal Answer: A", "A"),
    ("final answer: (c)", "C"),
    ("**Final Answer:** D", "D"),
    ("Final Answer: [B]", "B"),
    ("Final Answer: Option C", "C"),
    ("Final Answer: B. a tundra", "B"),
    ("Final Answer: a desert", "D"),  # the option's text, not the article "a"
    ("Final Answer: A\nOn reflection, Final Answer: C", "C"),  # the last statement wins
    ("The correct answer is (D).", "D"),
    ("So the best option is B because tundras are cold.", "B"),
    ("D. the plains", "D"),  # a bare option line
    ("(B)", "B"),
    ("Final Answer: [Correct Option Letter]", None),  # the template echoed back
    ("I am not sure which one.", None),
    ("A lot of fog forms near water.", None),  # a sentence starting with the article "A"
    ("", None),
    ("Final Answer: E", None),  # not an option
    ("\x00\x01 garbage ??? ###", None),
])
def test_parse_answer_four_options(text, expected):
    assert parse_answer(text, FOUR) == expected


@pytest.mark.parametrize("text, expected", [
    ("Final Answer: No, penguins need cold water.", "B"),
    ("Final Answer: yes.", "A"),
    ("Final answer: B", "B"),
    ("So the answer is yes", "A"),
    ("Final Answer: Yes and no", "A"),
    ("Maybe.", None),
])
def test_parse_answer_yes_no(text, expected):
    assert parse_answer(text, YES_NO) == expected


@pytest.mark.parametrize("text, expected", [
    ("No decomposition", []),
    ("'No decomposition'", []),
    ("No decomposition.\n", []),
    ("1. What is fog?\n2. Where is the air humid?", ["What is fog?", "Where is the air humid?"]),
    ("Subquestions:\n- What is a marsh?\n- What is a desert?", ["What is a marsh?", "What is a desert?"]),
    ("1) What is fog? Why does it form?", ["What is fog?", "Why does it form?"]),
    ("Sub-question 1: Is a penguin a bird?\nSub-question 2: Can birds fly?",
     ["Is a penguin a bird?", "Can birds fly?"]),
    ("1. What is fog?\n2. what is fog?\n3. What is fog?", ["What is fog?"]),  # duplicates collapse
    ("1. Define photosynthesis\n2. Identify the energy source", ["Define photosynthesis", "Identify the energy source"]),
    ("A. a marsh\nB. a tundra", []),  # the options echoed back are not subquestions
    ("I think this is a good question", []),
    ("", []),
])
def test_parse_subquestions(text, expected):
    assert parse_subquestions(text) == expected


def test_parse_subquestions_caps_the_list():
    text = "\n".join(f"{i}. Question number {i}?" for i in range(1, 20))
    assert len(parse_subquestions(text)) == MAX_SUBQUESTIONS
