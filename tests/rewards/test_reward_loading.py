"""Reward function specs: "file.py:fn" relative to the config's directory, "package.module:fn",
and errors that name the spec, the file and the function."""

from __future__ import annotations

import pytest

from flowrl.errors import ConfigError
from flowrl.rewards import RewardFunctionError, load_reward_function, resolve_reward_spec
from rewards.reward_files import write_rewards


def test_file_spec_is_relative_to_the_config_directory(tmp_path):
    write_rewards(tmp_path / "conf")
    fn = load_reward_function("rewards.py:score", base_dir=tmp_path / "conf")
    assert fn(["p", "p"], ["6", "7"], answer=["6", "6"]) == [1.0, 0.0]
    ref = resolve_reward_spec("rewards.py:score", tmp_path / "conf")
    assert ref.path == (tmp_path / "conf" / "rewards.py").resolve()
    assert ref.name == "rewards.py:score"


def test_same_file_loads_once_and_two_files_with_one_name_do_not_collide(tmp_path):
    a = write_rewards(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rewards.py").write_text(
        "def score(prompts, completions, **kw):\n    return [7.0] * len(completions)\n")
    fa = load_reward_function(f"{a}:score")
    assert load_reward_function(f"{a}:score") is fa
    fb = load_reward_function("b/rewards.py:score", base_dir=tmp_path)
    assert fb(["p"], ["x"]) == [7.0] and fa(["p"], ["x"], answer=["x"]) == [1.0]


def test_module_spec(tmp_path, monkeypatch):
    write_rewards(tmp_path / "my_pkg", "scoring.py")
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward_function("my_pkg.scoring:only_answer")
    assert fn(["p"], ["c"], answer=["abc"]) == [3.0]
    assert resolve_reward_spec("my_pkg.scoring:score").name == "my_pkg.scoring:score"


@pytest.mark.parametrize("spec", ["rewards.py", "a:b:c", ":score", "rewards.py:", 3])
def test_malformed_spec(spec):
    with pytest.raises(RewardFunctionError, match="expected 'file.py:function' or "
                                                  "'package.module:function'") as err:
        resolve_reward_spec(spec)
    assert repr(spec) in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_missing_file_names_spec_and_resolved_path(tmp_path):
    with pytest.raises(RewardFunctionError) as err:
        load_reward_function("nope.py:score", base_dir=tmp_path)
    assert "'nope.py:score'" in str(err.value)
    assert f"file {tmp_path.resolve() / 'nope.py'} does not exist" in str(err.value)


def test_missing_function_names_file_and_suggests(tmp_path):
    path = write_rewards(tmp_path)
    with pytest.raises(RewardFunctionError) as err:
        load_reward_function("rewards.py:scor", base_dir=tmp_path)
    msg = str(err.value)
    assert f"{path.resolve()} has no function 'scor'; did you mean 'score'?" in msg
    assert "only_answer" in msg  # the functions that are there


def test_not_callable_and_wrong_signature(tmp_path):
    write_rewards(tmp_path)
    with pytest.raises(RewardFunctionError, match="'not_a_function' in .*rewards.py is a int, "
                                                  "not a function"):
        load_reward_function("rewards.py:not_a_function", base_dir=tmp_path)
    with pytest.raises(RewardFunctionError, match=r"'one_arg' in .* must take \(prompts, "
                                                  r"completions, \*\*columns\); it takes "
                                                  r"\(completions\)"):
        load_reward_function("rewards.py:one_arg", base_dir=tmp_path)


def test_file_that_fails_to_import_names_the_file_and_cause(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_real_module_xyz\n")
    with pytest.raises(RewardFunctionError) as err:
        load_reward_function("broken.py:score", base_dir=tmp_path)
    msg = str(err.value)
    assert "'broken.py:score'" in msg and str(tmp_path.resolve() / "broken.py") in msg
    assert "ModuleNotFoundError" in msg and "not_a_real_module_xyz" in msg


def test_missing_module_names_it():
    with pytest.raises(RewardFunctionError, match="cannot import module 'no_such_pkg_xyz.mod'"):
        load_reward_function("no_such_pkg_xyz.mod:score")
