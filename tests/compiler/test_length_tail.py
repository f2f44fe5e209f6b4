"""Response-length distribution in the cost model (issue 14 item 4: the long tail)."""

import math

import pytest

from flowrl.compiler.costmodel import (CONTINUOUS_SLOTS, decode_step_time, decode_time,
                                       train_time)
from flowrl.compiler.lengths import Z99, LengthDist, sigma_from_p99
from flowrl.compiler.memory import transient_bytes
from flowrl.compiler.resources import model_resources
from flowrl.config import ModelConfig, load_config
from flowrl.errors import CompileError, ConfigError
from flowrl.ir import Mesh
from flowrl.ir.cluster import parse_cluster

from compiler_helpers import ARGS, SYNC, compile_ppo, ppo_graphs, ppo_models, shape

C8 = parse_cluster("8xH100-80GB")
MESH = Mesh(tuple(range(8)), 1, 1, 8)


def resources(**generation):
    """PPO 7B resources with the policy's ``generation`` settings (seq 2048, cap 1024)."""
    models = ppo_models(7, max_seq_len=2048)
    models["policy"] = ModelConfig(**shape(7), max_seq_len=2048,
                                   generation={"max_new_tokens": 1024, **generation})
    return model_resources(models, ppo_graphs(), SYNC)


def test_sigma_from_p99_gives_the_mean_and_the_percentile():
    sigma = sigma_from_p99(1000, 6000)
    d = LengthDist(1000, sigma, 10 ** 6)
    assert math.exp(d.mu + sigma ** 2 / 2) == pytest.approx(1000)
    assert d.quantile(0.99) == pytest.approx(6000)
    assert sigma_from_p99(1000, 1000) == 0.0
    assert sigma_from_p99(1000, 10 ** 6) == pytest.approx(Z99)  # beyond reach: the largest
    assert d.expected_max(1000) > d.expected_max(10) > d.quantile(0.5)
    assert LengthDist(1000, sigma, 4000).expected_max(10 ** 5) == 4000  # capped


def test_default_is_every_response_at_max_new_tokens():
    res = resources()["policy"]
    assert res.lengths == LengthDist.fixed(1024) and not res.lengths.has_tail
    assert res.expected_seq_len == res.max_seq_len == 2048
    n = res.max_new_tokens
    assert decode_time(res, MESH, 128, C8) == pytest.approx(
        n * decode_step_time(res, MESH, 128, res.prompt_len + n / 2, C8))


def test_static_batching_waits_for_the_longest_response():
    res = resources(expected_new_tokens=256, p99_new_tokens=900)["policy"]
    n_max = res.lengths.expected_max(128)
    assert 256 < n_max <= 1024
    assert decode_time(res, MESH, 128, C8) == pytest.approx(
        n_max * decode_step_time(res, MESH, 128, res.prompt_len + n_max / 2, C8))
    # a bigger call waits for a longer straggler
    assert res.lengths.expected_max(1024) > n_max
    no_tail = resources(expected_new_tokens=256)["policy"]
    assert decode_time(no_tail, MESH, 128, C8) < decode_time(res, MESH, 128, C8)
    assert decode_time(no_tail, MESH, 128, C8) < decode_time(resources()["policy"], MESH,
                                                             128, C8)


def test_continuous_batching_is_mean_tokens_at_full_slots_plus_the_tail():
    res = resources(expected_new_tokens=256, p99_new_tokens=900,
                    batching="continuous")["policy"]
    b, n_max = 4096 // 8, res.lengths.expected_max(4096)
    slots = min(b, CONTINUOUS_SLOTS)
    bulk = b * 256 / slots * decode_step_time(res, MESH, slots * 8, res.prompt_len + 128, C8)
    tail = (n_max - 256) * decode_step_time(res, MESH, 8, res.prompt_len + (256 + n_max) / 2,
                                            C8)
    assert decode_time(res, MESH, 4096, C8) == pytest.approx(bulk + tail)
    static = resources(expected_new_tokens=256, p99_new_tokens=900)["policy"]
    assert decode_time(res, MESH, 4096, C8) < decode_time(static, MESH, 4096, C8)
    # without a tail and within the slots, both batchings are the old formula
    flat = resources(batching="continuous")["policy"]
    assert decode_time(flat, MESH, 128, C8) == pytest.approx(
        decode_time(resources()["policy"], MESH, 128, C8))


def test_continuous_generator_holds_kv_for_its_slots_at_the_mean_context():
    static = resources(expected_new_tokens=256)["policy"]
    cont = resources(expected_new_tokens=256, batching="continuous")["policy"]
    args = ARGS.model_copy(update={"generation_batch_size": 8 * 1024})
    assert transient_bytes("generate", cont, MESH, args) < \
        transient_bytes("generate", static, MESH, args) / 4


def test_scorers_and_trainers_inherit_the_flows_lengths():
    res = resources(expected_new_tokens=256, p99_new_tokens=900)
    trainer = res["ppo_policy"]
    assert trainer.lengths.mean == 256 and trainer.expected_seq_len == 1024 + 256
    full = resources()["ppo_policy"]
    assert train_time(trainer, MESH, ARGS, C8) < 0.7 * train_time(full, MESH, ARGS, C8)


def test_a_long_tail_shows_in_the_synchronous_step():
    models = ppo_models(7, max_seq_len=2048)
    base = compile_ppo(models).estimates.iteration_time
    tail = {n: m.model_copy(update={"generation": m.generation.model_copy(update={
        "max_new_tokens": 1024, "expected_new_tokens": 128, "p99_new_tokens": 1000})})
        for n, m in models.items()}
    flat = {n: m.model_copy(update={"generation": m.generation.model_copy(update={
        "max_new_tokens": 1024, "expected_new_tokens": 128})}) for n, m in models.items()}
    with_tail = compile_ppo(tail).estimates.iteration_time
    assert compile_ppo(flat).estimates.iteration_time < with_tail < base


def test_bad_lengths_name_the_field():
    with pytest.raises(ConfigError, match=r"models.p.generation: p99_new_tokens=3 is below "
                                          r"expected_new_tokens=5"):
        load_config({"models": {"p": {"generation": {"expected_new_tokens": 5,
                                                     "p99_new_tokens": 3}}}})
    with pytest.raises(ConfigError, match=r"models.p.generation: expected_new_tokens=20 "
                                          r"exceeds max_new_tokens=10"):
        load_config({"models": {"p": {"generation": {"max_new_tokens": 10,
                                                     "expected_new_tokens": 20}}}})
    with pytest.raises(ConfigError, match=r"p99_new_tokens needs expected_new_tokens"):
        load_config({"models": {"p": {"generation": {"p99_new_tokens": 30}}}})
    with pytest.raises(ConfigError, match=r"batching"):
        load_config({"models": {"p": {"generation": {"batching": "paged"}}}})
    models = ppo_models(7, max_seq_len=512)
    models["policy"] = ModelConfig(**shape(7), max_seq_len=512,
                                   generation={"expected_new_tokens": 400})
    with pytest.raises(CompileError, match=r"model 'policy': generation.expected_new_tokens="
                                           r"400 exceeds the response budget of 256 tokens"):
        model_resources(models, ppo_graphs(), SYNC)


def test_profile_reads_measured_response_lengths(tmp_path):
    from flowrl.compiler.profile import length_notes, load_profile

    (tmp_path / "op_profile.jsonl").write_text(
        '{"role": "rollout", "op": "policy.forward_step", "model": "policy", "seconds": 1.0, '
        '"bytes": 0}\n')
    (tmp_path / "metrics.jsonl").write_text(
        '{"episode": 0, "time/episode_s": 2.0}\n'
        '{"episode": 1, "policy/generated_tokens": 640, "samples": 64, "time/episode_s": 1.0}\n'
        '{"episode": 2, "policy/generated_tokens": 768, "samples": 64}\n'
        '{"episode": 2, "actor/response_length": 300.0, "actor/generated_tokens": 1, '
        '"samples": 64}\n')
    profile = load_profile(tmp_path)
    assert profile.response_lengths == {"policy": 11.0, "actor": 300.0}
    models = {"policy": ModelConfig(generation={"max_new_tokens": 16}),
              "actor": ModelConfig(generation={"max_new_tokens": 512,
                                               "expected_new_tokens": 290})}
    assert length_notes(profile, models) == [
        "measured mean response of 'policy': 11 tokens (planned: 16); set "
        "models.policy.generation.expected_new_tokens: 11 to plan unmeasured ops and "
        "placements with it"]


def test_headline_counts_the_expected_lengths():
    """Generated tokens and model FLOPs of the explain headline follow the expected response
    length when the config sets one (the cap otherwise)."""
    from flowrl.compiler.schedule import call_flops
    from flowrl.config import RuntimeArgs

    args = RuntimeArgs(sample_per_episode=8, generation_batch_size=8, train_global_batch_size=8)
    capped = resources()["policy"]
    short = resources(expected_new_tokens=256)["policy"]
    p = capped.num_params
    assert call_flops("generate", capped, args) == 2 * p * 8 * 2048
    assert call_flops("generate", short, args) == 2 * p * 8 * (1024 + 256)
