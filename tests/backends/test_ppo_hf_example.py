"""examples/ppo_hf.py end to end (2 short episodes) with the HF generate backend."""

from __future__ import annotations

import copy

import pytest
import yaml

from _backend_utils import EXAMPLES_DIR, need

pytestmark = pytest.mark.backend


def test_ppo_hf_runs_with_hf_generate(tmp_path):
    need("transformers", "hf")
    import ppo_hf

    cfg = yaml.safe_load((EXAMPLES_DIR / "ppo_hf.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["runtime_args"].update(num_episode=2, sample_per_episode=16, generation_batch_size=8,
                               train_global_batch_size=8, train_micro_batch_size=4,
                               output_dir=str(tmp_path / "run"), progress=False)
    for m in cfg["models"].values():
        if "model_path" in m["args"]:
            m["args"]["model_path"] = str(tmp_path / "tiny_llama")
    cfg["models"]["policy"]["args"].update(backend="hf", max_new_tokens=8)
    history = ppo_hf.main(cfg)
    assert len(history) == 2
    assert all(0.0 <= h["reward/reward"] <= 1.0 for h in history)
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
