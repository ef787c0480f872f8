"""Built-in questions for `tmd demo`: one in the style of each benchmark."""

from .records import Question

DEMO_QUESTIONS = [
    Question("demo-fog", "There is most likely going to be fog around:",
             {"A": "a marsh", "B": "a tundra", "C": "the plains", "D": "a desert"}, "A"),
    Question("demo-penguin", "Could a penguin survive a summer day in the Sahara desert without help?",
             {"A": "yes", "B": "no"}, "B"),
    Question("demo-plants", "Which of these do plants need to make their own food?",
             {"A": "moonlight", "B": "sunlight", "C": "sand", "D": "salt water"}, "B"),
]
