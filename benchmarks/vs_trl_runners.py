"""The two sides of ``benchmarks/vs_trl.py``: the shared :class:`Settings` and what each
framework gets from them (flowrl's config, TRL's ``GRPOConfig``), the tiny Llama, and the
runner child processes that train and pass the :class:`Baton` back after each step.

Spawned children import this module by name (``benchmarks/`` is on the parent's ``sys.path``,
which a spawned child inherits).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowrl.errors import FlowRLError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "arith.jsonl"   # {"prompt": "3+4=", "answer": "7"}
REWARD = f"{ROOT / 'examples' / 'rewards.py'}:score"
#: The tiny Llama of examples/grpo_hf.yaml (``model.init``): a character tokenizer over these
TINY = {"chars": "0123456789+= ", "hidden_size": 64, "seed": 0}


@dataclass(frozen=True)
class Settings:
    """The hyper-parameters both frameworks get (one source for both)."""

    steps: int = 30                    # optimizer steps (= generation rounds) per runner
    group_size: int = 8                # completions per prompt
    completions_per_step: int = 64     # completions generated per optimizer step
    micro_batch: int = 32              # completions per forward/backward
    lr: float = 3e-3
    max_new_tokens: int = 2
    temperature: float = 1.0
    clip_eps: float = 0.2
    beta: float = 0.0                  # no KL term: neither side runs a reference model
    grad_clip: float = 1.0
    adv_eps: float = 1e-4              # TRL's advantage epsilon: (r - mean) / (std + 1e-4)
    seed: int = 1


def mapping(s: Settings) -> list[tuple[str, str, str]]:
    """(setting, flowrl key, TRL argument) rows, both sides with their values."""
    accum = s.completions_per_step // s.micro_batch
    return [
        ("algorithm", "algorithm.name=grpo", "GRPOTrainer"),
        ("group size", f"runtime_args.num_inference_per_prompt={s.group_size}",
         f"num_generations={s.group_size}"),
        ("completions / step", f"runtime_args.sample_per_episode={s.completions_per_step}",
         f"generation_batch_size={s.completions_per_step} (steps_per_generation={accum})"),
        ("one optimizer step / round",
         f"runtime_args.train_global_batch_size={s.completions_per_step}, num_training_epoch=1",
         f"gradient_accumulation_steps={accum}, num_iterations=1"),
        ("micro-batch", f"runtime_args.train_micro_batch_size={s.micro_batch}",
         f"per_device_train_batch_size={s.micro_batch}"),
        ("optimizer", f"models.actor.optim: lr={s.lr}, constant, AdamW(0.9, 0.999), wd 0",
         f"learning_rate={s.lr}, lr_scheduler_type=constant, AdamW(0.9, 0.999), wd 0"),
        ("grad clip", f"models.actor.optim.grad_clip={s.grad_clip}",
         f"max_grad_norm={s.grad_clip}"),
        ("max new tokens", f"models.policy.generation.max_new_tokens={s.max_new_tokens}",
         f"max_completion_length={s.max_new_tokens}"),
        ("sampling", f"temperature={s.temperature}, top_p=1, top_k=0",
         f"temperature={s.temperature}, top_p=1, top_k=0"),
        ("KL", f"algorithm.kl.coef={s.beta} (no reference model)",
         f"beta={s.beta} (no reference model)"),
        ("clip eps", f"algorithm.policy_loss.options.clip_low={s.clip_eps} (high = low)",
         f"epsilon={s.clip_eps} (epsilon_high = epsilon)"),
        ("loss aggregation", "policy_loss grpo: agg=seq-mean-token-mean",
         "loss_type=grpo (per-sequence token mean, mean over sequences)"),
        ("advantage", f"advantage grpo: std=unbiased, eps={s.adv_eps}",
         "scale_rewards=group (torch.std, unbiased; eps 1e-4)"),
        ("dtype", "fp32 (the checkpoint's)", "fp32, bf16=False"),
        ("reward", "reward.function=examples/rewards.py:score (mode inline)",
         "reward_funcs=[examples/rewards.py:score]"),
        ("data", "data.path=examples/data/arith.jsonl", "the same records, as flowrl loads them"),
        ("seed", f"runtime_args.seed={s.seed}", f"seed={s.seed}"),
    ]


def flowrl_config(s: Settings, out_dir: Path, model_dir: Path, staleness: int) -> dict:
    """The ``flowrl train`` config (as a dict: every matched value written out, nothing taken
    from a YAML that may change) with the example's data and reward function."""
    return {
        "algorithm": {
            "name": "grpo", "kl": {"coef": s.beta},
            "policy_loss": {"name": "grpo", "options": {"clip_low": s.clip_eps,
                                                        "agg": "seq-mean-token-mean"}},
            "advantage": {"estimator": "grpo", "options": {"std": "unbiased",
                                                           "eps": s.adv_eps}}},
        "model": {"path": str(model_dir)},
        "data": {"path": str(DATA)},
        "reward": {"function": REWARD, "mode": "inline"},  # a cheap function: no pool
        "runtime_args": {
            "num_episode": s.steps, "seed": s.seed, "output_dir": str(out_dir),
            "num_inference_per_prompt": s.group_size,
            "sample_per_episode": s.completions_per_step,
            "generation_batch_size": s.completions_per_step,
            "train_global_batch_size": s.completions_per_step, "num_training_epoch": 1,
            "train_micro_batch_size": s.micro_batch, "max_staleness": staleness,
            "new_run_dir": True},
        "models": {
            "policy": {"generation": {"max_new_tokens": s.max_new_tokens, "top_p": 1.0,
                                      "top_k": 0, "temperature": s.temperature},
                       "args": {"generator": "hf"}},
            "actor": {"optim": {"lr": s.lr, "scheduler": "constant", "weight_decay": 0.0,
                                "betas": [0.9, 0.999], "grad_clip": s.grad_clip}}},
    }


def trl_config(s: Settings, out_dir: Path) -> Any:
    """TRL's ``GRPOConfig`` with the same values (see :func:`mapping`)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out_dir), use_cpu=True, report_to="none", use_vllm=False,
        max_steps=s.steps, seed=s.seed, bf16=False, fp16=False,
        num_generations=s.group_size, per_device_train_batch_size=s.micro_batch,
        gradient_accumulation_steps=s.completions_per_step // s.micro_batch,
        num_iterations=1, max_completion_length=s.max_new_tokens,
        temperature=s.temperature, top_p=1.0, top_k=0,
        learning_rate=s.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, max_grad_norm=s.grad_clip,
        beta=s.beta, epsilon=s.clip_eps, loss_type="grpo", scale_rewards="group",
        logging_steps=1, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)


class BenchmarkError(FlowRLError):
    """A runner of the benchmark failed or TRL is missing (names the runner and its log)."""


# ---- turn-taking: one runner at a time, in blocks of steps -------------------------------------
class Baton:
    """The child's side of the turn-taking: :meth:`wait` for the parent's go (a number of
    steps), :meth:`step` after each step (times it and hands the baton back when the block
    is done). Waiting time is never counted in a step."""

    def __init__(self, conn: Any, steps: int) -> None:
        self.conn, self.steps = conn, steps
        self.done = self.left = 0
        self.t0 = self.c0 = 0.0

    def wait(self) -> None:
        self.left = self.conn.recv()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def ready(self) -> None:
        """Setup finished: tell the parent, then wait for the first go."""
        import torch

        self.conn.send(("ready", torch.get_num_threads()))  # as the framework left it
        self.wait()

    def step(self, tokens: float, reward: float) -> None:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self.done += 1
        self.conn.send(("step", {"step": self.done, "wall_s": wall, "cpu_s": cpu,
                                 "tokens": float(tokens), "reward": float(reward)}))
        self.left -= 1
        if self.left == 0 and self.done < self.steps:
            self.wait()
        else:
            self.t0, self.c0 = time.perf_counter(), time.process_time()


def _run_flowrl(s: Settings, run_dir: Path, baton: Baton, staleness: int) -> None:
    from flowrl.recipes import build

    out = run_dir / ("flowrl" if staleness == 0 else f"flowrl_stale{staleness}")
    engine, _ = build(flowrl_config(s, out, run_dir / "tiny_llama", staleness))

    class Turns:
        def on_train_begin(self, engine: Any) -> None:
            baton.ready()

        def on_episode_end(self, engine: Any, episode: int, metrics: dict) -> None:
            baton.step(metrics["policy/generated_tokens"], metrics["reward/reward/mean"])

    try:
        engine.learn(callbacks=[Turns()])
    finally:
        engine.shutdown()


def _run_trl(s: Settings, run_dir: Path, baton: Baton) -> None:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    records, score = same_data_and_reward(run_dir)
    seen = {"tokens": 0.0, "rewards": []}

    def reward(prompts, completions, completion_ids, **columns):  # noqa: ANN001
        out = score(prompts, completions, **columns)  # the very function flowrl calls
        seen["tokens"] += sum(len(c) for c in completion_ids)  # up to and incl. EOS
        seen["rewards"] += out
        return out

    reward.__name__ = score.__name__

    class Turns(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            baton.ready()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            baton.step(seen["tokens"], statistics.fmean(seen["rewards"]))
            seen.update(tokens=0.0, rewards=[])

    path = str(run_dir / "tiny_llama")
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        processing_class=AutoTokenizer.from_pretrained(path), reward_funcs=[reward],
        args=trl_config(s, run_dir / "trl"), train_dataset=datasets.Dataset.from_list(records),
        callbacks=[Turns()])
    trainer.train()


def same_data_and_reward(run_dir: Path) -> tuple[list[dict], Any]:
    """The example's training records (as flowrl loads them) and its reward function."""
    from flowrl.data import load_dataset_spec
    from flowrl.recipes import load_train_config
    from flowrl.rewards import load_reward_function

    cfg = load_train_config(flowrl_config(Settings(), run_dir, run_dir / "tiny_llama", 0))
    records = load_dataset_spec(cfg.data, base_dir=cfg.base_dir).train
    return [dict(r) for r in records], load_reward_function(cfg.reward.function)


def _child(name: str, settings: dict, run_dir: str, conn: Any, threads: int) -> None:
    """A runner's process: its output into ``<run_dir>/<name>.log``, then train."""
    import os

    log = open(Path(run_dir) / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the child
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    import torch

    torch.set_num_threads(threads)
    s, path = Settings(**settings), Path(run_dir)
    baton = Baton(conn, s.steps)
    if name == "trl":
        _run_trl(s, path, baton)
    else:
        _run_flowrl(s, path, baton, staleness=1 if name == "flowrl_stale1" else 0)
    conn.send(("done", None))


def write_model(run_dir: Path) -> Path:
    """The example's tiny Llama (:data:`TINY`), written once into ``run_dir``."""
    from flowrl.models.hf import save_tiny_llama

    path = run_dir / "tiny_llama"
    if not (path / "config.json").is_file():
        save_tiny_llama(path, **TINY)
    return path
