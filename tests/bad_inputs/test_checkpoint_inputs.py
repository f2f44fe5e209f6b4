"""Bad checkpoints: malformed manifests, paths that escape, changed shapes, no good checkpoint
after a failure. Each is reported as a bad checkpoint (and the previous one used) or refused
with an error naming the checkpoint, model or parameter."""

from __future__ import annotations

import json
import os

import pytest
import torch

import flowrl
from flowrl import TorchModule
from flowrl.models.torch_module import CheckpointMismatchError
from flowrl.runtime.checkpoint import (MANIFEST, CheckpointError, CheckpointManager,
                                       CheckpointWarning)


def _two_checkpoints(tmp_path):
    mgr = CheckpointManager(tmp_path / "ckpt")
    for ep in (1, 2):
        mgr.save(ep, {"runner": {"episode": ep}, "modules/policy": {"w": torch.full((2,), ep)}})
    return mgr, mgr.path_for(2)


def _edit_manifest(path, edit):
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps(edit(manifest)))


def _set(key, value):
    def edit(m):
        m[key] = value
        return m
    return edit


def _rename_file(new_name):
    def edit(m):
        m["files"][new_name] = m["files"].pop("runner.pt")
        return m
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], "expected a JSON object, got list"),
    (lambda m: "text", "expected a JSON object, got str"),
    (_set("files", ["runner.pt"]), "'files' must be a non-empty object, got list"),
    (_set("files", {}), "'files' must be a non-empty object"),
    (_set("episode", "two"), "'episode' must be a non-negative integer, got 'two'"),
    (_set("episode", None), "'episode' must be a non-negative integer, got None"),
    (lambda m: {**m, "files": {k: "abc" for k in m["files"]}}, "file 'runner.pt': expected"),
    (lambda m: {**m, "files": {k: {"bytes": "12", "sha256": v["sha256"]}
                               for k, v in m["files"].items()}}, "file 'runner.pt': expected"),
    (_rename_file("/etc/passwd.pt"), "'/etc/passwd.pt' in manifest.json points outside"),
    (_rename_file("../../secret.pt"), "'../../secret.pt' in manifest.json points outside"),
    (_rename_file("runner.txt"), "file 'runner.txt': expected a .pt file"),
])
def test_a_malformed_manifest_is_a_bad_checkpoint_and_the_previous_one_is_used(
        tmp_path, edit, message):
    mgr, bad = _two_checkpoints(tmp_path)
    _edit_manifest(bad, edit)
    with pytest.raises(CheckpointError, match=message) as e:
        mgr.load(bad)
    assert "episode_0002" in str(e.value)  # names the checkpoint
    with pytest.warns(CheckpointWarning, match="episode_0002"):
        ckpt = mgr.load_latest()
    assert ckpt.episode == 1


def test_a_symlink_out_of_the_checkpoint_directory_is_refused(tmp_path):
    mgr, bad = _two_checkpoints(tmp_path)
    outside = tmp_path / "outside.pt"
    os.replace(bad / "runner.pt", outside)
    os.symlink(outside, bad / "runner.pt")  # same bytes and checksum, but lives elsewhere
    with pytest.raises(CheckpointError, match=r"episode_0002: file 'runner.pt' in manifest.json "
                                              r"points outside the checkpoint directory"):
        mgr.load(bad)
    with pytest.warns(CheckpointWarning, match="points outside"):
        assert mgr.load_latest().episode == 1


class Lin(TorchModule):
    def __init__(self, name, width):
        super().__init__(name)
        self.width = width

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, self.width)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)


def test_resuming_a_model_whose_shapes_changed_names_model_and_parameter():
    flowrl.init({"models": {"head": {}}})
    old = Lin("head", 2)
    old.setup()
    state = old.state_dict_for_checkpoint()
    flowrl.init({"models": {"head": {}}})
    new = Lin("head", 4)
    new.setup()
    with pytest.raises(CheckpointMismatchError,
                       match=r"cannot resume model 'head'.*bias: \(2,\) in the checkpoint vs "
                             r"\(4,\) now; weight: \(2, 3\) in the checkpoint vs \(4, 3\) now"):
        new.load_checkpoint_state(state)


def test_resuming_a_model_with_renamed_parameters_names_them():
    flowrl.init({"models": {"head": {}}})
    old = Lin("head", 2)
    old.setup()
    state = old.state_dict_for_checkpoint()
    state["model"] = {f"layer.{k}": v for k, v in state["model"].items()}
    with pytest.raises(CheckpointMismatchError,
                       match=r"model 'head'.*weight: missing from the checkpoint.*"
                             r"layer.weight: in the checkpoint"):
        old.load_checkpoint_state(state)


def test_resuming_an_engine_whose_model_grew_names_it_and_blocks_a_plain_retry(tmp_path):
    import copy

    from ppo_setup import TINY_PPO, build_ppo

    from flowrl.engines.engine import EngineFailedError

    cfg = copy.deepcopy(TINY_PPO)
    cfg["runtime_args"].update(num_episode=1, output_dir=str(tmp_path), save_episode_interval=1)
    build_ppo(cfg)[0].learn()
    cfg["runtime_args"].update(num_episode=2, resume=True)
    for name in ("value", "ppo_value"):  # both, so the sync pair still agrees
        cfg["models"][name]["args"]["d_model"] = 48
    engine, _ = build_ppo(cfg)
    with pytest.raises(CheckpointMismatchError, match=r"cannot resume model '(value|ppo_value)'.*"
                                                      r"\(\d+, 32\) in the checkpoint vs "
                                                      r"\(\d+, 48\) now"):
        engine.learn()
    with pytest.raises(EngineFailedError, match=r"failed at episode 1 .*learn\(resume=True\)"):
        engine.learn(resume=False)
