"""issue 13, compiler half: the pipelined episode (max_staleness >= 1) in the schedule, its
steady-state timeline on hand-computed stage times, the explain warning, the JSON form, and
the 'decoupled' pass inserting proximal_logprobs."""

from __future__ import annotations

import json

import pytest
import torch
from compiler_helpers import ARGS, METHODS, SYNC, compile_ppo, ppo_graphs, ppo_models

import flowrl
from flowrl import Engine, TorchModule, flow
from flowrl.compiler import compile_schedule
from flowrl.compiler.decouple import INSERTED_BY, insert_proximal_logprobs
from flowrl.compiler.lower import lower
from flowrl.compiler.pipelining import plan_pipeline
from flowrl.errors import CompileError
from flowrl.ir import Estimates, Mesh, Op, Schedule
from flowrl.report.pipeline import overlap_warning, segments
from flowrl.report.text import explain_text

K1 = ARGS.model_copy(update={"max_staleness": 1})


def _estimates(rollout=(1.0, 1.0, 3), train=(0.5, 0.5, 2), sync=0.25) -> Estimates:
    """Role times (first run, each further run, runs): R = 3 s, T = 1 s, S = 0.25 s."""
    return Estimates(iteration_time=0.0, repeats={"rollout": rollout[2], "train": train[2],
                                                  "sync": 1},
                     role_time={"rollout": rollout[0], "train": train[0], "sync": sync},
                     role_repeat_time={"rollout": rollout[1], "train": train[1], "sync": sync},
                     transfer_bytes=0, sync_bytes=0)


def _placement(rollout_devices, train_devices) -> dict[str, Mesh]:
    out = {m: Mesh(tuple(rollout_devices)) for m in ("policy", "reference", "reward", "value")}
    out.update({m: Mesh(tuple(train_devices)) for m in ("ppo_policy", "ppo_value")})
    return out


SYNC_OPS = {"sync": [Op("sync", "policy", src="ppo_policy"), Op("sync", "value", src="ppo_value")]}


def test_disjoint_devices_overlap_rollout_with_train_and_sync():
    plan = plan_pipeline(_estimates(), SYNC_OPS, ppo_graphs(), _placement([0], [1]), 1)
    # R = 1 + 2 * 1 = 3, T = 0.5 + 0.5 = 1, S = 0.25: max(3, 1) + 0.25; the push waits 2 s.
    assert plan.overlap and plan.shared_devices == ()
    assert plan.steady_state_time == pytest.approx(3.25)
    assert plan.synchronous_time == pytest.approx(4.25)
    assert plan.speedup == pytest.approx(4.25 / 3.25)
    assert plan.sync_wait == pytest.approx(2.0)
    ro, tr = plan.stage("rollout"), plan.stage("train")
    assert (ro.devices, ro.time, ro.bubble) == ((0,), 3.0, 0.0)
    assert (tr.devices, tr.time, tr.bubble) == ((1,), 1.25, 2.0)
    assert plan.pushes == (("ppo_policy", "policy"), ("ppo_value", "value"))


def test_train_bound_pipeline_leaves_the_rollout_group_idle():
    est = _estimates(rollout=(0.5, 0.5, 2), train=(2.0, 2.0, 2), sync=0.5)
    plan = plan_pipeline(est, SYNC_OPS, ppo_graphs(), _placement([0, 1], [2, 3]), 2)
    assert plan.steady_state_time == pytest.approx(4.5)  # max(1, 4) + 0.5
    assert plan.sync_wait == 0.0
    assert plan.stage("rollout").bubble == pytest.approx(3.0)  # 4.5 - 1 - 0.5 (push received)
    assert plan.buffer_depth == plan.max_staleness == 2


def test_shared_devices_add_up_like_the_synchronous_episode():
    plan = plan_pipeline(_estimates(), SYNC_OPS, ppo_graphs(), _placement([0, 1], [1, 2]), 1)
    assert not plan.overlap and plan.shared_devices == (1,)
    assert plan.steady_state_time == pytest.approx(4.25) == plan.synchronous_time
    assert plan.speedup == 1.0
    kinds = [s.kind for s in segments(plan, episodes=1)]
    assert kinds == ["rollout", "train", "push"]  # one lane, one after the other


def test_no_pipeline_without_staleness():
    assert plan_pipeline(_estimates(), SYNC_OPS, ppo_graphs(), _placement([0], [1]), 0) is None
    sched = compile_ppo(cluster="8xH100-80GB", strategy="disaggregate")
    assert sched.pipeline is None and "pipeline" not in sched.to_json()
    assert "pipelined episode" not in sched.explain()


def test_compiled_disaggregated_schedule_pipelines_its_role_times():
    sched = compile_ppo(strategy="disaggregate", args=K1)
    plan, est = sched.pipeline, sched.estimates
    total = {r: est.role_time[r] + (est.repeats[r] - 1) * est.role_repeat_time[r]
             for r in ("rollout", "train", "sync")}
    assert plan.overlap
    assert plan.steady_state_time == pytest.approx(
        max(total["rollout"], total["train"]) + total["sync"])
    assert plan.synchronous_time == pytest.approx(est.iteration_time)
    assert plan.speedup > 1.2
    text = sched.explain()
    assert "steady-state time per episode" in text and "max_staleness buys no overlap" not in text
    assert f"predicted speedup {plan.speedup:.2f}x" in text


def test_explain_warns_when_rollout_and_train_share_devices():
    sched = compile_ppo(models=ppo_models(1), cluster="2xH100-80GB", strategy="colocate",
                        args=K1)
    plan = sched.pipeline
    assert not plan.overlap and plan.shared_devices == (0, 1)
    assert plan.suggestion is not None and plan.suggestion.strategy == "disaggregate"
    warning = overlap_warning(plan)
    # Six models on two devices: disaggregated as two colocation groups, one per stage.
    assert plan.suggestion.colocation == (("policy", "reference", "value", "reward"),
                                          ("ppo_policy", "ppo_value"))
    assert warning.startswith("max_staleness buys no overlap here: rollout and train share "
                              "devices 0-1; a disaggregated placement (e.g. --strategy "
                              "disaggregate, colocation_group [policy, reference, value, "
                              "reward], colocation_group [ppo_policy, ppo_value]) would "
                              "overlap them, predicted ")
    assert f"{plan.steady_state_time:.3g} s -> {plan.suggestion.steady_state_time:.3g} s" \
        in warning
    assert "warning: max_staleness buys no overlap here" in explain_text(sched, width=400)


def test_one_device_cannot_overlap_and_says_why():
    sched = compile_ppo(models=ppo_models(1), cluster="1xH100-80GB", strategy="colocate",
                        args=K1)
    assert sched.pipeline.suggestion is None
    assert "no disaggregate placement fits cluster" in overlap_warning(sched.pipeline)


def test_json_round_trip_with_the_pipeline_object():
    sched = compile_ppo(strategy="disaggregate", args=K1)
    data = json.loads(json.dumps(sched.to_json()))
    assert data["pipeline"]["max_staleness"] == 1
    assert [s["name"] for s in data["pipeline"]["stages"]] == ["rollout", "train"]
    back = Schedule.from_json(data)
    assert back.pipeline == sched.pipeline
    assert back.to_json() == data
    plain = compile_ppo(strategy="disaggregate")  # k = 0: the same keys as before issue 13
    assert set(plain.to_json()) == set(data) - {"pipeline"}


def test_trace_and_png_show_the_pipelined_steady_state(tmp_path):
    sched = compile_ppo(strategy="disaggregate", args=K1)
    trace = json.loads(open(sched.to_chrome_trace(str(tmp_path / "t.json"))).read())
    bars = [e for e in trace["traceEvents"] if e.get("pid") == 1 and e["ph"] == "X"]
    assert {e["args"]["stage"] for e in bars} >= {"rollout", "train", "push"}
    assert trace["otherData"]["steady_state_time_s"] == sched.pipeline.steady_state_time
    png = sched.plot_memory(str(tmp_path / "m.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ---- the 'decoupled' pass ---------------------------------------------------------------------
DECOUPLED = K1.model_copy(update={"off_policy": K1.off_policy.model_copy(
    update={"correction": "decoupled"})})
WITH_PROX = {**METHODS, "ppo_policy": METHODS["ppo_policy"] | {"proximal_logprobs"}}


def _compile_decoupled(methods) -> Schedule:
    return compile_schedule(ppo_graphs(), ppo_models(7), SYNC, "8xH100-80GB", "colocate",
                            methods, runtime_args=DECOUPLED)


def test_decoupled_pass_inserts_proximal_logprobs_before_the_policy_train_step():
    sched = _compile_decoupled(WITH_PROX)
    train = sched.graphs["train"]
    step = train.call("ppo_policy.train_step")
    assert "ppo_policy.proximal_logprobs" in step.inputs
    prox = train.call("ppo_policy.proximal_logprobs")
    assert (prox.model, prox.inputs, prox.source) == ("ppo_policy", step.inputs[:-1], INSERTED_BY)
    assert "ppo_value.proximal_logprobs" not in train.graph  # the value trainer is no policy
    nodes = [op.node for op in sched.ops["train"] if op.kind == "call"]
    assert nodes.index("ppo_policy.proximal_logprobs") < nodes.index("ppo_policy.train_step")
    assert "[inserted by compiler pass 'decoupled']" in explain_text(sched, width=200)
    assert ppo_graphs()["train"].call("ppo_policy.train_step").inputs == ("<input>",)


@pytest.mark.parametrize("args", [K1, DECOUPLED.model_copy(update={"max_staleness": 0})])
def test_decoupled_pass_changes_nothing_otherwise(args):
    graphs = ppo_graphs()
    assert insert_proximal_logprobs(graphs, SYNC, args, WITH_PROX) is graphs


def test_trainer_without_proximal_logprobs_is_a_compile_error():
    with pytest.raises(CompileError) as err:
        _compile_decoupled(METHODS)
    msg = str(err.value)
    assert "trainer 'ppo_policy' implements no proximal_logprobs" in msg
    assert "runtime_args.off_policy.correction 'decoupled'" in msg and "models.ppo_policy" in msg
    assert "in compiler pass 'decoupled'" in "".join(getattr(err.value, "__notes__", []))
    with pytest.raises(CompileError, match="trainer 'ppo_policy' implements no proximal"):
        lower(ppo_graphs(), SYNC, runtime_args=DECOUPLED, methods=METHODS)


def test_decoupled_without_a_policy_trainer_is_a_compile_error():
    with pytest.raises(CompileError, match="no trainer is synced into the rollout's generating"):
        insert_proximal_logprobs(ppo_graphs(), [("ppo_value", "value")], DECOUPLED, WITH_PROX)


# ---- a tiny engine whose trainer defines proximal_logprobs ------------------------------------
class _Points(torch.utils.data.Dataset):
    collate_fn = None

    def __init__(self, prompts):
        self.xs = [float(p) for p in prompts]

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return {"x": torch.tensor(self.xs[i])}


class _Line(TorchModule):
    """``pred = w x + b`` trained on ``(pred - 2x)^2``; the trainer's ``train_step`` checks
    the proximal prediction it receives is its own, computed right before the step."""

    seen: list[bool] = []

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)

    def build_dataset(self, prompts, is_eval=False):
        return _Points(prompts)

    def forward_step(self, data, iteration=0):
        with torch.no_grad():
            return {"x": data["x"], "pred": self.model(data["x"][:, None]).squeeze(1)}

    def _predict(self, micro_batches):
        with torch.no_grad():
            return [self.model(mb["x"][:, None]).squeeze(1) for mb in micro_batches]

    def proximal_logprobs(self, data, iteration=0):
        """One value per micro-batch of the train step's input (merged into each)."""
        return {"proximal_logprobs": self._predict(data)}

    def train_step(self, data, iteration):
        now = self._predict(data)
        _Line.seen += [torch.equal(mb["proximal_logprobs"], p) for mb, p in zip(data, now)]

        def loss_fn(mb):
            pred = self.model(mb["x"][:, None]).squeeze(1)
            return ((pred - 2 * mb["x"]) ** 2).mean(), {}
        return self.train_micro_batches(data, loss_fn)


GEN, TRAINER = _Line("gen"), _Line("trainer")


@flow
def _rollout(batch):
    return GEN.forward_step(batch)


@flow
def _train(batch):
    TRAINER.train_step(batch)


def test_inserted_call_runs_before_each_train_step_in_the_local_runtime():
    flowrl.init({"runtime_args": {
        "num_episode": 3, "sample_per_episode": 8, "generation_batch_size": 4,
        "train_global_batch_size": 4, "train_micro_batch_size": 2, "progress": False,
        "seed": 1, "max_staleness": 1, "off_policy": {"correction": "decoupled"}},
        "models": {"gen": {}, "trainer": {}}})
    engine = Engine(_rollout, _train, sync={TRAINER: GEN})
    graph = engine.compile().graphs["train"]
    assert graph.call("trainer.train_step").inputs == ("<input>", "trainer.proximal_logprobs")
    _Line.seen.clear()
    engine.set_dataset([0.5, 1.0, 1.5, 2.0, -0.5, -1.0, -1.5, -2.0])
    try:
        engine.learn()
    finally:
        engine.shutdown()
    # 3 episodes x 2 optimizer steps x 2 micro-batches, each with its proximal prediction
    assert _Line.seen == [True] * 12


def test_search_scores_the_steady_state_and_never_loses_to_its_seeds():
    seeds = [compile_ppo(strategy=s, args=K1).pipeline.steady_state_time
             for s in ("colocate", "disaggregate")]
    best = compile_ppo(strategy="search", args=K1).pipeline
    assert best.steady_state_time <= min(seeds) + 1e-9


def test_tiny_ppo_runs_decoupled_ppo_through_the_inserted_call():
    """The built-in tiny PPO trainer's proximal_logprobs, inserted by the pass, feeds the
    decoupled correction: stale episodes report its importance-weight statistics."""
    import copy

    from ppo_setup import TINY_PPO, build_ppo

    cfg = copy.deepcopy(TINY_PPO)
    cfg["runtime_args"].update(num_episode=3, max_staleness=1,
                               off_policy={"correction": "decoupled"})
    engine, _ = build_ppo(cfg)
    assert "ppo_policy.proximal_logprobs" in engine.compile().graphs["train"].graph
    try:
        rows = engine.learn()
    finally:
        engine.shutdown()
    stale = [r for r in rows if r.get("staleness/max", 0) > 0]
    assert stale and all("ppo_policy/off_policy/is_weight_mean" in r for r in stale)
