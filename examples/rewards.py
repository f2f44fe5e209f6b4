"""The reward of examples/grpo_hf.yaml: how close is the completion to the right sum?

flowrl calls ``score(prompts, completions, answer=...)`` with the decoded completions
(special tokens skipped) and the data's ``answer`` column; it returns one float each.
"""

import re


def score(prompts, completions, answer, **columns):
    """1 for exactly the right digit. Otherwise partial credit, so that a model starting
    from random weights has a signal to climb: a completion that starts with a digit scores
    by how close that digit is (up to 0.5); anything else scores 0."""
    out = []
    for completion, truth in zip(completions, answer):
        text = completion.strip()
        if text == truth:
            out.append(1.0)
            continue
        digit = re.match(r"\d", text)
        out.append(0.5 * (1 - abs(int(digit.group()) - int(truth)) / 9) if digit else 0.0)
    return out
