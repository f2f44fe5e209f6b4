"""DAPO's dynamic sampling in the episode loop: groups whose scores do not vary never reach
the trainer, refills come from the same seeded prompt stream, max_batches ends an episode
without a crash or a hang, resume is exact, and bad settings are refused by name."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl import BaseModule, GRPOEngine, outputs
from flowrl.algorithms.settings import DynamicSamplingSettings
from flowrl.engines import grpo
from flowrl.errors import ConfigError
from flowrl.models.toy_tokenizer import ToyTokenizer
from flowrl.runtime.checkpoint import CheckpointManager
from flowrl.runtime.data import PromptStream
from flowrl.runtime.dynamic_sampling import DynamicSampler
from fixtures import tiny_grpo
from tiny_engines import TINY_GRPO, comparable, config, module_tensors, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

ON = {"enabled": True}


class ParityReward(BaseModule):
    """Scores every sample of an even-answer prompt 1 (a group that never varies) and the
    samples of an odd-answer prompt 0, 1, 2, ... in group order (always varies)."""

    odd_only = True

    @outputs("score", "advantages")
    def forward_step(self, data, iteration=0):
        n = self.runtime_args.num_inference_per_prompt
        scores = torch.tensor([float(i % n) if int(a) % 2 or not self.odd_only else 1.0
                               for i, a in enumerate(data["answer"])])
        return {"score": scores, "advantages": grpo.group_advantages(scores, n)}


class VaryingReward(ParityReward):
    """Every group varies: dynamic sampling has nothing to drop."""

    odd_only = False


class ConstantReward(ParityReward):
    """No group varies: every refill is in vain."""

    @outputs("score", "advantages")
    def forward_step(self, data, iteration=0):
        scores = torch.ones(len(data["answer"]))
        return {"score": scores, "advantages": torch.zeros_like(scores)}


def build(cfg: dict, reward_cls=ParityReward, sampling=None) -> GRPOEngine:
    flowrl.init(cfg)
    engine = GRPOEngine(tiny_grpo.MathPolicy("policy"), tiny_grpo.PolicyReference("reference"),
                        reward_cls("reward"), tiny_grpo.GRPOTrainer("grpo_policy"))
    engine.set_dataset(tiny_grpo.split_problems()[0])
    if sampling is not None:
        engine.set_dynamic_sampling(sampling)
    return engine


def record_train_answers(engine) -> list[list[str]]:
    """The answers of every train call's samples, as the trainer receives them (per call)."""
    engine.setup()
    seen, run = [], engine.executor.run

    def spy(role, data, iteration):
        if role == "train":
            seen.append([a for mb in data for a in mb["answer"]])
        return run(role, data, iteration)
    engine.executor.run = spy
    return seen


def stream_answers(cfg: dict, batches: int) -> list[list[str]]:
    """The prompts' answers of the first ``batches`` prompt batches of the seeded stream."""
    flowrl.init(cfg)
    a = flowrl.get_args().runtime_args
    dataset = tiny_grpo.MathDataset(tiny_grpo.split_problems()[0], ToyTokenizer(), 6)
    stream = PromptStream(dataset,
                          a.generation_batch_size // a.num_inference_per_prompt, a.seed)
    return [stream.next()["answer"] for _ in range(batches)]


def expected_episodes(answers: list[list[str]], episodes: int, max_batches: int = 10**9
                      ) -> list[tuple[int, int, list[str]]]:
    """Oracle of the refill rule on the stream's answers: per episode (batches drawn, groups
    dropped, the answers of the kept groups in order). Batch = 4 prompts, episode = 8 groups:
    2 batches first, then as many as the missing groups need if every one were kept."""
    out, i = [], 0
    for _ in range(episodes):
        kept, dropped, batches = [], 0, 0
        while len(kept) < 8 and batches < max_batches:
            count = 2 if batches == 0 else -(-(8 - len(kept)) // 4)
            for b in answers[i:i + min(count, max_batches - batches)]:
                kept += [a for a in b if int(a) % 2]
                dropped += sum(1 for a in b if int(a) % 2 == 0)
                i, batches = i + 1, batches + 1
        out.append((batches, dropped, kept[:8]))
    return out


def no_sampling_keys(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("dynamic_sampling/")}
            for r in comparable(rows)]


# ---- off is today's loop; nothing to drop is today's loop too ------------------------------
def test_off_and_enabled_with_nothing_to_drop_equal_the_plain_loop():
    cfg = config(TINY_GRPO, num_episode=2)
    plain = build(cfg, VaryingReward)
    rows = plain.learn()
    assert not any(k.startswith("dynamic_sampling/") for k in rows[0])
    off = build(cfg, VaryingReward, {"enabled": False, "max_batches": 3})
    assert comparable(off.learn()) == comparable(rows)
    on = build(cfg, VaryingReward, ON)
    on_rows = on.learn()
    assert no_sampling_keys(on_rows) == comparable(rows)  # same prompts, iterations, weights
    assert [(r["dynamic_sampling/batches"], r["dynamic_sampling/dropped_groups"])
            for r in on_rows] == [(2.0, 0.0), (2.0, 0.0)]
    for a, b in ((plain, off), (plain, on)):
        for name, state in module_tensors(a).items():
            other = module_tensors(b)[name]
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, other[key]), (name, key)


# ---- constant groups are dropped, refills come from the prompt stream ----------------------
def test_constant_groups_never_reach_the_trainer_and_refills_fill_the_episode():
    cfg = config(TINY_GRPO, num_episode=2)
    engine = build(cfg, ParityReward, ON)
    trained = record_train_answers(engine)
    rows = engine.learn()
    want = expected_episodes(stream_answers(cfg, 12), 2)
    assert any(b > 2 for b, _, _ in want)  # the check below covers at least one refill
    for row, (batches, dropped, kept) in zip(rows, want):
        assert row["dynamic_sampling/batches"] == batches
        assert row["dynamic_sampling/dropped_groups"] == dropped
        assert row["dynamic_sampling/kept_groups"] == 8.0 and row["samples"] == 32.0
        assert row["dynamic_sampling/exhausted"] == 0.0
    # two global batches of 16 per episode; every trained sample is of a varying group
    assert len(trained) == 4 and all(int(a) % 2 for call in trained for a in call)
    for e, (_, _, kept) in enumerate(want):
        got = trained[2 * e] + trained[2 * e + 1]
        assert sorted(got) == sorted(a for a in kept for _ in range(4))


def test_the_sampler_counts_rollout_iterations_across_episodes():
    # refills take fresh rollout iterations: episode 2 starts after every batch drawn before
    cfg = config(TINY_GRPO, num_episode=2)
    engine = build(cfg, ParityReward, ON)
    engine.setup()
    iterations, run_many = [], engine.executor.run_many

    def spy(role, batches, first):
        iterations.extend(range(first, first + len(batches)))
        return run_many(role, batches, first)
    engine.executor.run_many = spy
    rows = engine.learn()
    total = int(sum(r["dynamic_sampling/batches"] for r in rows))
    assert iterations == list(range(total)) and engine.runner.sampler.drawn == total


# ---- max_batches: train on what was kept, or skip training; never crash or hang -----------
def test_max_batches_trains_on_what_was_kept():
    cfg = config(TINY_GRPO, num_episode=2)
    engine = build(cfg, ParityReward, {"enabled": True, "max_batches": 2})
    trained = record_train_answers(engine)
    rows = engine.learn()
    want = expected_episodes(stream_answers(cfg, 4), 2, max_batches=2)
    for row, (batches, _, kept) in zip(rows, want):
        assert row["dynamic_sampling/batches"] == 2.0
        assert row["dynamic_sampling/kept_groups"] == len(kept) < 8
        assert row["dynamic_sampling/exhausted"] == 1.0
        assert row["samples"] == 4 * len(kept)
        assert row["dynamic_sampling/train_skipped"] == float(len(kept) < 4)
    assert len(trained) == sum(4 * len(k) // 16 for _, _, k in want)
    assert all(int(a) % 2 for call in trained for a in call)


def test_no_varying_group_skips_training_with_a_warning(capsys):
    cfg = config(TINY_GRPO, num_episode=2)
    engine = build(cfg, ConstantReward, {"enabled": True, "max_batches": 3})
    trained = record_train_answers(engine)
    before = {k: v.clone() for k, v in engine.modules["grpo_policy"].model.state_dict().items()}
    rows = engine.learn()
    assert trained == [] and len(rows) == 2
    for row in rows:
        assert row["dynamic_sampling/batches"] == 3.0 and row["samples"] == 0.0
        assert row["dynamic_sampling/kept_groups"] == 0.0
        assert row["dynamic_sampling/dropped_groups"] == 12.0
        assert row["dynamic_sampling/exhausted"] == 1.0
        assert row["dynamic_sampling/train_skipped"] == 1.0
    after = engine.modules["grpo_policy"].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    out = capsys.readouterr().out
    assert "dynamic sampling: episode 2 drew 3 rollout batches (the limit) and kept 0" in out
    assert "its training is skipped" in out


def test_no_limit_means_one_pass_over_the_prompts():
    cfg = config(TINY_GRPO, num_episode=1)
    engine = build(cfg, ConstantReward, ON)
    row = engine.learn()[0]
    # 45 training problems, 4 prompts a batch: 11 batches in one pass
    assert engine.runner.sampler.max_batches == 11
    assert row["dynamic_sampling/batches"] == 11.0 and row["dynamic_sampling/exhausted"] == 1.0


# ---- resume --------------------------------------------------------------------------------
def test_resume_is_exact(tmp_path):
    full = build(config(TINY_GRPO, num_episode=3, output_dir=str(tmp_path / "full")),
                 ParityReward, ON)
    full_rows = full.learn()
    cfg = config(TINY_GRPO, num_episode=3, output_dir=str(tmp_path / "split"),
                 save_episode_interval=1)
    build(cfg, ParityReward, ON).learn(num_episode=1)
    state = CheckpointManager(tmp_path / "split" / "checkpoints").load_latest().parts["runner"]
    assert state["dynamic_sampling"] == {"drawn": int(full_rows[0]["dynamic_sampling/batches"])}
    cfg["runtime_args"]["resume"] = True
    resumed = build(cfg, ParityReward, ON)
    rows = resumed.learn()
    assert [r["episode"] for r in rows] == [2, 3]
    assert comparable(resumed.history) == comparable(full_rows)
    a, b = module_tensors(resumed), module_tensors(full)
    for name in a:
        for key, value in a[name].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[name][key]), (name, key)


# ---- bad settings ----------------------------------------------------------------------------
def test_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.enabled: .*"
                                          r"runtime_args\.max_staleness=1"):
        build(config(TINY_GRPO, max_staleness=1), ParityReward, ON)
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.max_batches=1 is fewer "
                                          r"than the 2 rollout batches of one episode \(runtime_"
                                          r"args\.sample_per_episode=32"):
        build(config(TINY_GRPO), ParityReward, {"enabled": True, "max_batches": 1})
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.max_batches: .*"
                                          r"greater than or equal to 1"):
        build(config(TINY_GRPO), ParityReward, {"enabled": True, "max_batches": 0})
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.enable: Extra inputs"):
        build(config(TINY_GRPO), ParityReward, {"enable": True})
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling: expected "
                                          r"DynamicSamplingSettings or a dict, got bool"):
        build(config(TINY_GRPO), ParityReward, True)
    flowrl.init(config(TINY_GRPO, num_inference_per_prompt=1, generation_batch_size=16))
    with pytest.raises(ConfigError, match=r"runtime_args\.num_inference_per_prompt=1; a group "
                                          r"of one sample never varies"):
        DynamicSampler(DynamicSamplingSettings(enabled=True), flowrl.get_args().runtime_args, 4)
    engine = build(config(TINY_GRPO, num_episode=1), ParityReward)
    engine.learn()
    with pytest.raises(ConfigError, match="set_dynamic_sampling must be called before learn"):
        engine.set_dynamic_sampling(ON)


class ScorelessReward(ParityReward):
    @outputs("reward_value", "advantages")
    def forward_step(self, data, iteration=0):
        out = super().forward_step(data, iteration)
        return {"reward_value": out["score"], "advantages": out["advantages"]}


def test_a_rollout_without_scores_is_named():
    engine = build(config(TINY_GRPO, num_episode=1), ScorelessReward, ON)
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.enabled: the rollout "
                                          r"flow's output has no 'score' key"):
        engine.learn()


# ---- flowrl train: the dapo preset turns it on -----------------------------------------------
def recipe(tmp_path, **runtime_args) -> dict:
    (tmp_path / "rewards.py").write_text("def score(prompts, completions, **kw):\n"
                                         "    return [0.0] * len(completions)\n")
    return {"algorithm": {"name": "dapo"}, "model": {"path": str(tmp_path / "no_model")},
            "data": {"path": "data.jsonl"},
            "reward": {"function": "rewards.py:score", "mode": "inline"},
            "runtime_args": {"num_inference_per_prompt": 4, "generation_batch_size": 16,
                             "train_micro_batch_size": 8, **runtime_args},
            "models": {"policy": {"generation": {"max_new_tokens": 8}}},
            "source": str(tmp_path / "train.yaml")}


def test_the_dapo_recipe_runs_dynamic_sampling_and_refuses_the_pipelined_loop(tmp_path):
    from flowrl.recipes import plan

    engine = plan(recipe(tmp_path))
    assert engine.dynamic_sampling == DynamicSamplingSettings(enabled=True)
    with pytest.raises(ConfigError, match=r"algorithm\.dynamic_sampling\.enabled: .*"
                                          r"runtime_args\.max_staleness=1"):
        plan(recipe(tmp_path, max_staleness=1))
    off = recipe(tmp_path, max_staleness=1)
    off["algorithm"]["dynamic_sampling"] = {"enabled": False}
    assert not plan(off).dynamic_sampling.enabled


# ---- Ray: the loop is on the driver ------------------------------------------------------------
@pytest.mark.ray
def test_ray_equals_local():
    ray = pytest.importorskip("ray")
    cfg = config(TINY_GRPO, num_episode=2)
    local = build(cfg, ParityReward, ON).learn()
    ray.init(address="local", num_cpus=2, resources={"flowrl_device": 16},
             include_dashboard=False, log_to_driver=False)
    try:
        engine = build({**cfg, "runtime": "ray"}, ParityReward, ON)
        try:
            remote = engine.learn()
        finally:
            engine.shutdown()
    finally:
        ray.shutdown()
    assert any(r["dynamic_sampling/batches"] > 2 for r in remote)
    assert comparable(remote) == comparable(local)
