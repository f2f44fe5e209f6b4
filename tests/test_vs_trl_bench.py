"""benchmarks/vs_trl.py's pieces: both sides get the same settings, the turn-taking baton,
the summary figures. Nothing here is timed or trains; skipped without TRL."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from flowrl.errors import FlowRLError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vs_trl"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vs_trl")
    bench.write_model(path)
    return path


def test_both_sides_get_the_same_settings(run_dir):
    from flowrl.recipes import load_train_config

    s = bench.Settings(steps=7, lr=1e-3, max_new_tokens=3, clip_eps=0.25)
    cfg = load_train_config(bench.flowrl_config(s, run_dir / "out", run_dir / "tiny_llama",
                                                staleness=1))
    trl = bench.trl_config(s, run_dir / "trl")
    ra, algo = cfg.runtime_args, cfg.algorithm
    assert (ra.num_episode, ra.max_staleness, ra.seed) == (7, 1, s.seed) == (
        trl.max_steps, 1, trl.seed)
    assert ra.num_inference_per_prompt == trl.num_generations == 8
    assert ra.sample_per_episode == ra.train_global_batch_size == trl.generation_batch_size == 64
    assert ra.num_training_epoch == 1
    assert ra.train_micro_batch_size == trl.per_device_train_batch_size == 32
    assert trl.steps_per_generation == trl.gradient_accumulation_steps == 2  # 1 step / round
    actor, policy = cfg.models["actor"], cfg.models["policy"]
    assert actor.optim.lr == trl.learning_rate == 1e-3
    assert (actor.optim.scheduler, trl.lr_scheduler_type.value) == ("constant", "constant")
    assert actor.optim.grad_clip == trl.max_grad_norm == 1.0
    assert policy.generation.max_new_tokens == trl.max_completion_length == 3
    assert policy.generation.temperature == trl.temperature == 1.0
    assert (policy.generation.top_p, policy.generation.top_k) == (trl.top_p, trl.top_k) == (1, 0)
    assert algo.kl.coef == trl.beta == 0.0 and "reference" not in cfg.roles()
    assert algo.policy_loss.name == "grpo" and trl.loss_type == "grpo"
    assert algo.policy_loss.options == {"clip_low": 0.25, "agg": "seq-mean-token-mean"}
    assert trl.epsilon == 0.25 and trl.epsilon_high in (None, 0.25)
    assert algo.advantage.options == {"std": "unbiased", "eps": 1e-4}
    assert trl.scale_rewards == "group" and trl.num_iterations == 1 and not trl.use_vllm
    assert not trl.bf16 and trl.use_cpu and cfg.reward.function == bench.REWARD


def test_mapping_names_every_setting():
    rows = bench.mapping(bench.Settings())
    names = [r[0] for r in rows]
    assert len(set(names)) == len(names) and all(len(r) == 3 for r in rows)
    for must in ("group size", "completions / step", "clip eps", "loss aggregation", "KL"):
        assert must in names


def test_same_data_and_reward(run_dir):
    records, score = bench.same_data_and_reward(run_dir)
    assert {"prompt": "3+4=", "answer": "7"}.items() <= next(
        r for r in records if r["prompt"] == "3+4=").items()
    # TRL passes extra keywords (completion_ids, trainer_state); the function takes them
    assert score(["3+4=", "1+1="], ["7", "x"], answer=["7", "2"], trainer_state=None,
                 completion_ids=[[1], [2]]) == [1.0, 0.0]


def test_baton_times_steps_and_hands_back_turns():
    parent, child = mp.Pipe()
    baton = bench.Baton(child, steps=3)
    parent.send(2)
    parent.send(1)  # the next turn, queued: the second step waits for it
    baton.ready()
    for i in range(3):
        baton.step(tokens=10 + i, reward=0.5)
    got = [parent.recv() for _ in range(4)]
    assert got[0][0] == "ready" and got[0][1] >= 1  # torch's thread count
    steps = [rec for kind, rec in got[1:] if kind == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["tokens"] for r in steps] == [10.0, 11.0, 12.0]
    assert all(r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in steps)
    assert not child.poll() and not parent.poll()  # no turn left over, nothing unread


def test_summarize_excludes_warmup_and_ratios():
    recs = [{"wall_s": w, "cpu_s": w / 2, "tokens": 100.0, "reward": r}
            for w, r in [(9.0, 0.1), (1.0, 0.2), (2.0, 0.3), (3.0, 0.4), (4.0, 0.5)]]
    s = bench.summarize(recs, warmup=1, last_k=2)
    assert s["timed_steps"] == 4 and s["s_per_step_median"] == 2.5
    assert s["s_per_step_mean"] == 2.5 and s["cpu_s_per_step_median"] == 1.25
    assert s["tokens_per_s"] == pytest.approx(400 / 10)
    assert s["reward_first"] == pytest.approx(0.15) and s["reward_last"] == pytest.approx(0.45)
    trl = dict(s, s_per_step_median=5.0, tokens_per_s=20.0)
    r = bench.ratios({"flowrl": s, "trl": trl}, "flowrl")
    assert r["s_per_step_median"] == 0.5 and r["tokens_per_s"] == 2.0


def test_unknown_runner_is_named():
    with pytest.raises(bench.BenchmarkError, match=r"--runners: unknown \['ray'\]"):
        bench.main(["--runners", "flowrl,ray"])
    assert issubclass(bench.BenchmarkError, FlowRLError)
    with pytest.raises(bench.BenchmarkError, match=r"--steps 2 must exceed --warmup 2"):
        bench.main(["--steps", "2", "--runners", "flowrl"])
