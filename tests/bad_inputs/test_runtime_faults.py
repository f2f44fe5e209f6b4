"""Runtime faults on the local runtime: non-finite values, failing setup(), bad sync pairs,
unused config sections, trainers without train_step, failed learn() retried, run directories.
Each asserts the error class and that the message names the model, field or directory."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, TorchModule, flow
from flowrl.engines.engine import EngineFailedError
from flowrl.errors import ConfigError, FlowRLError
from flowrl.runtime.executor import SetupError
from flowrl.runtime.guards import NonFiniteError
from flowrl.runtime.rundir import RunDirError
from flowrl.runtime.sync import sync_parameters

class Prompts(torch.utils.data.Dataset):
    collate_fn = None

    def __init__(self, prompts):
        self.prompts = list(prompts)

    def __len__(self):
        return len(self.prompts)

    def __getitem__(self, i):
        return {"x": torch.tensor(float(self.prompts[i]))}


RUNTIME = {"sample_per_episode": 4, "generation_batch_size": 2, "train_global_batch_size": 2,
           "train_micro_batch_size": 1, "progress": False, "num_episode": 2}


class Source(BaseModule):
    """Prompts -> {"x"}; ``bad``: put a NaN / inf into ``reward`` at rollout iteration ``at``."""

    bad: float | None = None
    at = 0

    def build_dataset(self, prompts, is_eval=False):
        return Prompts(prompts)

    def forward_step(self, data, iteration=0):
        reward = data["x"].float().clone()
        if self.bad is not None and iteration == self.at:
            reward[0] = self.bad
        return {"x": data["x"].float(), "reward": reward}


class Net(TorchModule):
    """A 1-weight linear model; ``loss_value`` replaces the loss (NaN, inf), ``inf_grad``
    makes the gradient infinite while the loss stays finite."""

    loss_value: float | None = None
    inf_grad = False

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def forward_step(self, data, iteration=0):
        return {"y": data["x"]}

    def train_step(self, data, iteration):
        def loss_fn(mb):
            out = self.model(mb["x"].float()[:, None]).sum()
            if self.inf_grad:  # d sqrt(u)/du at u = 0 is inf; the loss itself is 0
                w = self.model.weight
                out = torch.sqrt(w - w.detach()).sum()
            if self.loss_value is not None:
                out = out * 0 + self.loss_value
            return out, {}
        return self.train_micro_batches(data, loss_fn, max_grad_norm=1.0)


def _engine(runtime=None, models=("src", "trainer", "infer"), trainer_cls=Net, sync=True,
            **extra_models):
    flowrl.init({"runtime_args": {**RUNTIME, **(runtime or {})},
                 "models": {m: {} for m in (*models, *extra_models)}})
    src, trainer = Source("src"), trainer_cls("trainer")
    infer = Net("infer") if "infer" in models else None

    @flow
    def rollout(batch):
        out = src.forward_step(batch)
        return (out, infer.forward_step(out)) if infer is not None else out

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train, sync={trainer: infer} if sync and infer else None)
    engine.set_dataset([1, 2, 3, 4, 5, 6, 7, 8])
    return engine, src, trainer


# ---- non-finite values -------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nonfinite_reward_stops_before_training(value):
    engine, src, trainer = _engine()
    src.bad, src.at = value, 1
    engine.setup()
    before = trainer.model.weight.clone()
    with pytest.raises(NonFiniteError, match=r"model 'src' \(method forward_step, episode 1, "
                                             r"iteration 1\): key 'reward' has 1 NaN/inf "
                                             r"value\(s\) of 2"):
        engine.learn()
    assert torch.equal(trainer.model.weight, before)  # nothing trained, nothing synced


def test_skip_batch_drops_a_nonfinite_rollout_batch_and_counts_it():
    engine, src, _ = _engine({"on_nonfinite": "skip_batch", "num_episode": 1})
    src.bad, src.at = float("nan"), 0
    rows = engine.learn()
    assert rows[0]["src/nonfinite/skipped_batches"] == 1.0
    assert rows[0]["samples"] == 2.0  # one of the two rollout batches was dropped


@pytest.mark.parametrize("attr, value, key", [
    ("loss_value", float("nan"), "loss"), ("loss_value", float("inf"), "loss"),
    ("inf_grad", True, "grad_norm")])
def test_a_nonfinite_loss_or_grad_norm_stops_before_the_optimizer_step(attr, value, key):
    engine, _, trainer = _engine()
    setattr(trainer, attr, value)
    engine.setup()
    before = trainer.model.weight.clone()
    with pytest.raises(NonFiniteError, match=rf"model 'trainer' \(method train_step, episode 1, "
                                             rf"iteration 0\): key '{key}' has \d NaN/inf"):
        engine.learn()
    assert torch.equal(trainer.model.weight, before)
    assert all(p.grad is None for p in trainer.model.parameters())  # gradients dropped


def test_skip_batch_skips_a_nonfinite_train_step_and_counts_it():
    engine, _, trainer = _engine({"on_nonfinite": "skip_batch", "num_episode": 1})
    trainer.loss_value = float("nan")
    engine.setup()
    before = trainer.model.weight.clone()
    rows = engine.learn()
    assert rows[0]["trainer/nonfinite/skipped_batches"] == 2.0  # both global batches
    assert "trainer/loss" not in rows[0]
    assert torch.equal(trainer.model.weight, before)


class NaNMetrics(BaseModule):
    def train_step(self, data, iteration):
        return {"loss": float("nan")}


def test_a_train_step_returning_a_nonfinite_metric_is_stopped():
    engine, _, _ = _engine(models=("src", "trainer"), trainer_cls=NaNMetrics)
    with pytest.raises(NonFiniteError, match=r"model 'trainer' \(method train_step, episode 1, "
                                             r"iteration 0\): key 'loss'"):
        engine.learn()


def test_sync_and_checkpoint_refuse_nonfinite_weights(tmp_path):
    flowrl.init({"runtime_args": {**RUNTIME, "output_dir": str(tmp_path),
                                  "save_episode_interval": 1}, "models": {"a": {}, "b": {}}})
    a, b = Net("a"), Net("b")
    a.setup(), b.setup()
    with torch.no_grad():
        a.model.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"model 'a' \(method sync to 'b' \(parameter "
                                             r"'bias'\)\): key 'bias' has 1 NaN/inf"):
        sync_parameters(a, b)
    from flowrl.runtime.checkpoint import CheckpointManager
    from flowrl.runtime.episodes import EpisodeRunner
    from flowrl.ir import Schedule
    from flowrl.runtime.executor import LocalExecutor
    from flowrl.runtime.metrics import MetricsLogger

    class Stream:
        def state_dict(self):
            return {}

    runner = EpisodeRunner(LocalExecutor(Schedule({}, {}), {"a": a}), flowrl.get_args(),
                           Stream(), MetricsLogger(None),
                           modules={"a": a}, checkpoints=CheckpointManager(tmp_path / "c"))
    with pytest.raises(NonFiniteError, match=r"model 'a' \(method checkpoint \(parameter "
                                             r"'model.bias'\)\)"):
        runner.save_checkpoint()
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("episode_*"))


def test_on_nonfinite_must_be_raise_or_skip_batch():
    with pytest.raises(ConfigError, match=r"runtime_args.on_nonfinite"):
        flowrl.init({"runtime_args": {"on_nonfinite": "ignore"}})


# ---- construction and setup checks -------------------------------------------------------
class BadSetup(Net):
    def setup(self):
        raise OSError("weights file /models/x.bin not found")


def test_a_failing_setup_names_model_and_class_and_keeps_the_cause():
    engine, _, _ = _engine(trainer_cls=BadSetup)
    with pytest.raises(SetupError, match=r"setup\(\) of model 'trainer' \(BadSetup\) failed: "
                                         r"OSError: weights file") as e:
        engine.learn()
    assert isinstance(e.value.__cause__, OSError)


def test_sync_given_as_model_names_is_refused():
    flowrl.init({"runtime_args": RUNTIME, "models": {"src": {}, "trainer": {}}})
    src, trainer = Source("src"), Net("trainer")

    @flow
    def rollout(batch):
        return src.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    with pytest.raises(ConfigError, match=r"sync source 'trainer' is a str: pass the modules "
                                          r"themselves"):
        Engine(rollout, train, sync={"trainer": "src"})


def test_a_sync_target_without_weights_fails_at_setup_before_any_rollout():
    flowrl.init({"runtime_args": RUNTIME, "models": {"src": {}, "trainer": {}}})
    src, trainer = Source("src"), Net("trainer")

    @flow
    def rollout(batch):
        return src.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train, sync={trainer: src}).set_dataset([1, 2, 3, 4])
    with pytest.raises(ConfigError, match=r"sync trainer -> src: model 'src' \(Source\) has no "
                                          r"weights to sync"):
        engine.setup()
    assert engine.runner is None


class Wide(Net):
    def setup(self):
        self.model = torch.nn.Linear(1, 3)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)


def test_a_sync_pair_with_mismatched_shapes_fails_at_setup():
    engine, _, _ = _engine(trainer_cls=Wide)
    with pytest.raises(FlowRLError, match=r"cannot sync trainer -> infer: shape mismatches: "
                                          r"bias: \(3,\) vs \(1,\)"):
        engine.setup()


def test_a_model_section_no_flow_uses_is_an_error():
    engine, _, _ = _engine(models=("src", "trainer", "infer", "critic"))
    with pytest.raises(ConfigError, match=r"models.critic: no flow of this engine uses model\(s\)"
                                          r" critic"):
        engine.learn()


def test_a_trainer_without_train_step_is_refused_at_construction():
    flowrl.init({"runtime_args": RUNTIME, "models": {"src": {}, "x": {}}})
    src, x = Source("src"), Source("x")

    @flow
    def rollout(batch):
        return src.forward_step(batch)

    @flow
    def train(batch):
        x.train_step(batch)

    with pytest.raises(ConfigError, match=r"model 'x' \(Source\) is used as a trainer "
                                          r"\(train_step at .*\) but its class does not implement"):
        Engine(rollout, train)


def test_data_parallel_size_must_divide_the_micro_batches():
    flowrl.init({"runtime_args": {**RUNTIME, "train_micro_batch_size": 2},
                 "models": {"src": {}, "trainer": {"data_parallel_size": 2}}})
    src, trainer = Source("src"), Net("trainer")

    @flow
    def rollout(batch):
        return src.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    with pytest.raises(ConfigError, match=r"models.trainer: data_parallel_size 2 does not divide "
                                          r"the 1 micro-batches.*train_global_batch_size=2"):
        Engine(rollout, train)


def test_grpo_with_one_sample_per_prompt_is_refused():
    flowrl.init({"runtime_args": {"num_inference_per_prompt": 1}})
    from flowrl.engines.grpo import GRPOEngine

    with pytest.raises(ConfigError, match=r"runtime_args.num_inference_per_prompt=1: GRPO needs "
                                          r"at least 2"):
        GRPOEngine(None, None, None, None)


# ---- retrying after a failure ------------------------------------------------------------
class Interrupting(Net):
    def train_step(self, data, iteration):
        if iteration == 2:
            raise KeyboardInterrupt
        return super().train_step(data, iteration)


def test_learn_again_after_a_failure_needs_resume():
    engine, _, _ = _engine(trainer_cls=Interrupting)
    with pytest.raises(KeyboardInterrupt):
        engine.learn()
    with pytest.raises(EngineFailedError, match=r"the previous learn\(\) failed at episode 2 .*"
                                                r"call learn\(resume=True\)"):
        engine.learn()


def test_resume_after_a_failure_without_a_checkpoint_refuses(tmp_path):
    engine, src, _ = _engine({"output_dir": str(tmp_path)})
    src.bad = float("nan")
    with pytest.raises(NonFiniteError):
        engine.learn()
    with pytest.raises(EngineFailedError, match=r"failed at episode 1 and there is no checkpoint"
                                                r" to resume from \(runtime_args."
                                                r"save_episode_interval=0\)"):
        engine.learn(resume=True)


# ---- run directories ---------------------------------------------------------------------
def test_a_new_run_into_another_runs_output_dir_is_refused(tmp_path):
    _engine({"output_dir": str(tmp_path), "num_episode": 1})[0].learn()
    with pytest.raises(RunDirError, match=rf"runtime_args.output_dir: {tmp_path} already holds "
                                          rf"another run .*metrics.jsonl.*resume.*new_run_dir"):
        _engine({"output_dir": str(tmp_path), "num_episode": 1})[0].learn()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # untouched


def test_an_unwritable_output_dir_is_reported_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    engine, _, _ = _engine({"output_dir": str(blocker / "out")})
    with pytest.raises(RunDirError, match=rf"runtime_args.output_dir: directory {blocker}/out "
                                          rf"is not writable"):
        engine.learn()
    assert engine.runner is None  # nothing ran


def test_an_unwritable_checkpoint_dir_is_reported_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    engine, _, _ = _engine({"checkpoint_dir": str(blocker / "ckpt"), "save_episode_interval": 1})
    with pytest.raises(RunDirError, match=rf"runtime_args.checkpoint_dir: directory "
                                          rf"{blocker}/ckpt is not writable"):
        engine.learn()


def test_a_compiled_data_parallel_size_that_does_not_divide_the_micro_batches(
        tiny_ppo_config):
    from ppo_setup import build_ppo

    cfg = tiny_ppo_config
    cfg["cluster"] = "4xH100-80GB"  # colocate: every model gets 4 data-parallel replicas
    for section in cfg["models"].values():
        section.update(num_params=115_000, num_layers=2, hidden_size=64, vocab_size=47,
                       dtype="fp32", max_seq_len=16, max_new_tokens=8)
    engine, _ = build_ppo(cfg)
    with pytest.raises(ConfigError, match=r"models.ppo_policy: the compiled data-parallel size 4 "
                                          r"does not divide the 2 micro-batches"):
        engine.compile()
