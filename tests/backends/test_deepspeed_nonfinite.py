"""DeepSpeedModule.train_micro_batches runs TorchModule's non-finite check before the
optimizer step: ``raise`` stops with the weights untouched, ``skip_batch`` counts the step
and keeps NaN out of the weights and metrics."""

from __future__ import annotations

import pytest
import torch

from _backend_utils import need, tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.backend


@pytest.fixture(autouse=True)
def _ds():
    need("deepspeed", "deepspeed")
    need("transformers", "hf")


def _trainer(name, model_dir, policy, stage=0):
    import flowrl
    from flowrl.models import hf
    from flowrl.models.deepspeed_module import DeepSpeedModule

    flowrl.init({"runtime_args": {"train_global_batch_size": 8, "train_micro_batch_size": 4,
                                  "on_nonfinite": policy},
                 "models": {name: {"dtype": "fp32", "args": {"zero_stage": stage},
                                   "optim": {"lr": 1e-3}}}})

    class Trainer(DeepSpeedModule):
        def build_model(self):
            return hf.load_causal_lm(model_dir, self.compute_dtype)

        def train_step(self, data, iteration):
            def loss(engine, mb):  # a real forward, poisoned on the second micro-batch
                logits = engine(input_ids=mb["tokens"]).logits
                return logits.float().mean() * mb["scale"], {}
            return self.train_micro_batches(data, loss)

    t = Trainer(name).bind(flowrl.get_args())
    t.ensure_setup()
    return t


def _data():
    tokens = torch.randint(4, 30, (8, 6), generator=torch.Generator().manual_seed(0))
    return [{"tokens": tokens[:4], "scale": 1.0}, {"tokens": tokens[4:], "scale": float("nan")}]


def test_a_nan_loss_stops_before_the_deepspeed_step(tiny_llama_dir):
    from flowrl.models.finite import NonFiniteError

    t = _trainer("ds_nan_raise", tiny_llama_dir, "raise")
    before = {n: p.clone() for n, p in t.named_sync_tensors().items()}
    with pytest.raises(NonFiniteError, match=r"model 'ds_nan_raise' \(method train_step\): "
                                             r"key 'loss' has 1 NaN/inf value\(s\) of 2"):
        t.train_step(_data(), 0)
    after = t.named_sync_tensors()
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_skip_batch_counts_the_step_and_keeps_the_weights(tiny_llama_dir, stage):
    t = _trainer(f"ds_nan_skip_z{stage}", tiny_llama_dir, "skip_batch", stage)
    good = [dict(mb, scale=1.0) for mb in _data()]
    t.train_step(good, 0)  # a real step first: the optimizer has momentum
    before = {n: p.clone() for n, p in t.named_sync_tensors().items()}
    assert t.train_step(_data(), 1) == {}
    assert ("nonfinite/skipped_batches", 1.0, "sum") in t.drain_logged()
    after = t.named_sync_tensors()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert "loss" in t.train_step(good, 2)  # and training goes on, finite
    assert all(torch.isfinite(p).all() for p in t.named_sync_tensors().values())
