from __future__ import annotations

import json
from pathlib import Path

import yaml

from flowrl.cli import main
from flowrl.compiler import Schedule

from compiler_helpers import tiny_example_config

ROOT = Path(__file__).resolve().parents[2]
PLAN_70B = ROOT / "examples" / "ppo_70b_plan.yaml"
TINY_SCRIPT = ROOT / "examples" / "ppo_tiny.py"


def test_explain_config_text(capsys):
    assert main(["explain", str(PLAN_70B)]) == 0
    out = capsys.readouterr().out
    for needle in ("strategy colocate", "8xH100-80GB", "estimated iteration time", "DAG",
                   "policy.forward_step  <-  batch", "placement", "ops: rollout", "ops: train",
                   "ops: sync", "sync ppo_policy -> policy", "offload", "(streamed)",
                   "peak before offload", "peak after offload"):
        assert needle in out, needle


def test_explain_script_passes_arguments_and_survives_code_after_learn(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_example_config()))
    code = main(["explain", str(TINY_SCRIPT), "--cluster", "local", "--strategy", "search",
                 "--format", "json", "-c", str(cfg)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    s = Schedule.from_json(doc["schedules"][0])
    assert s.strategy == "search" and s.cluster.name == "local:1"
    assert set(s.ops) == {"rollout", "train", "sync"}
    # examples/ppo_tiny.py indexes learn()'s history, which is empty under explain
    assert "after learn() returned" in captured.err


def test_explain_trace_and_plot(tmp_path, capsys):
    trace, png = tmp_path / "t.json", tmp_path / "m.png"
    assert main(["explain", str(PLAN_70B), "--format", "trace", "-o", str(trace),
                 "--plot", str(png)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["args"]["role"] for e in spans} == {"rollout", "train", "sync"}
    assert max(e["args"]["run"] for e in spans if e["args"]["role"] == "rollout") == 16
    assert any(e["ph"] == "C" for e in events)  # memory counters
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_errors_are_reported(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.py")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: 8xH100-80GB\nmodels:\n  policy: {}\n")
    assert main(["explain", str(bad)]) == 1
    assert "six sections" in capsys.readouterr().err
    cfg = yaml.safe_load(PLAN_70B.read_text())
    del cfg["models"]["value"]["num_params"], cfg["models"]["value"]["num_layers"]
    nosize = tmp_path / "nosize.yaml"
    nosize.write_text(yaml.safe_dump(cfg))
    assert main(["explain", str(nosize)]) == 1
    assert "models.value.num_params" in capsys.readouterr().err
    script = tmp_path / "nolearn.py"
    script.write_text("print('hello')\n")
    assert main(["explain", str(script), "--cluster", "local"]) == 1
    assert "never called engine.learn()" in capsys.readouterr().err


def test_bench_placement_runs(tmp_path, capsys):
    # implemented in benchmarks/placement.py; more in test_bench.py
    assert main(["bench", "placement", "--quick", "--no-plot", "--out", str(tmp_path)]) == 0
    assert "best strategy count" in capsys.readouterr().out


def test_user_errors_exit_1_without_a_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [policy\n")
    zero = tmp_path / "zero.yaml"
    cfg = yaml.safe_load(PLAN_70B.read_text())
    cfg["cluster"] = "8xH100-0GB"
    zero.write_text(yaml.safe_dump(cfg))
    for target, needle in ((broken, "broken.yaml"), (zero, "device_memory_gb")):
        assert main(["explain", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert main(["explain", str(PLAN_70B), "--profile", str(tmp_path / "no_run")]) == 1
    err = capsys.readouterr().err
    assert "no op profile at" in err and "Traceback" not in err
