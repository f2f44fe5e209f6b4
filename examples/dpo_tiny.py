"""Tiny offline DPO on CPU: preference pairs in, the chosen-vs-rejected margin grows.

    python examples/dpo_tiny.py -c examples/dpo_tiny.yaml

The records are prompt/chosen/rejected strings (the format ``load_preference_records`` reads
from JSONL). Here they are synthetic: the chosen response is vowel-rich, the rejected one
consonant-rich. An Evaluator scores held-out pairs (implicit-reward accuracy and margin).
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import flowrl  # noqa: E402
from flowrl import DPOEngine, Evaluator, flow  # noqa: E402
from tiny_dpo_models import DPOReference, DPOTrainer  # noqa: E402

VOWELS, CONSONANTS = "aeiou", "bcdfghjklmnpqrstvwxyz"


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` records; chosen draws 80% vowels, rejected 20%, both 4-8 letters."""
    rng = random.Random(seed)

    def text(p_vowel: float, length: int) -> str:
        return "".join(rng.choice(VOWELS if rng.random() < p_vowel else CONSONANTS)
                       for _ in range(length))

    records = []
    for _ in range(n):
        length = rng.randint(4, 8)
        records.append({"prompt": text(0.3, rng.randint(3, 6)), "chosen": text(0.8, length),
                        "rejected": text(0.2, length)})
    return records


def build(config=None, with_evaluator: bool = True):
    flowrl.init(config)
    policy, reference = DPOTrainer("policy"), DPOReference("reference")
    engine = DPOEngine(policy, reference)

    @flow
    def evaluate(batch):
        return policy.eval_step(batch, reference.forward_step(batch))

    engine.set_dataset(make_pairs(512, seed=0))
    if with_evaluator:
        engine.set_evaluator(Evaluator(evaluate).set_dataset(make_pairs(128, seed=1)))
    return engine


if __name__ == "__main__":
    torch.set_num_threads(1)  # models this small run fastest on one thread
    engine = build(None if "-c" in sys.argv else Path(__file__).with_name("dpo_tiny.yaml"))
    history = engine.learn()
    train = [r for r in history if "policy/margin" in r]
    evals = [r for r in history if "eval/margin" in r]
    print(f"train margin: episode 1 {train[0]['policy/margin']:.3f} -> episode "
          f"{train[-1]['episode']} {train[-1]['policy/margin']:.3f}; train pair accuracy "
          f"{train[0]['policy/accuracy']:.2f} -> {train[-1]['policy/accuracy']:.2f}")
    print("held-out margin / accuracy: " + ", ".join(
        f"ep{r['episode']}={r['eval/margin']:.3f}/{r['eval/correct']:.2f}" for r in evals))
