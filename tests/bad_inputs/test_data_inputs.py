"""Bad data: prompt lists that are not lists, failing datasets and collate_fns, ragged batches.

Every case asserts the error class and that the message names the call, dataset class, index
or key at fault.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from flowrl import Engine, Evaluator, flow
from flowrl.errors import (BatchError, ConfigError, DatasetError, DatasetTypeError,
                           FlowRLError)
from flowrl.runtime.data import PromptStream, check_dataset, check_prompts, split_batch

from .conftest import Echo, ListDataset


def _gen():
    yield from range(4)


@pytest.mark.parametrize("prompts, message", [
    ("text", r"set_dataset got a single str \('text'\), which would become one prompt per "
             r"character; pass a list of prompts, e.g. \['text'\]"),
    (b"text", r"set_dataset got a single bytes .*one prompt per character"),
    (None, r"set_dataset got None; pass a list of prompts"),
    ({"a": 1, "b": 2}, r"set_dataset got a dict with keys \['a', 'b'\]; pass a list of prompts "
                       r"\(e\.g\. list\(d\.values\(\)\)\)"),
    (_gen(), r"set_dataset got a generator, not a sized, indexable collection; pass a list of "
             r"prompts \(e\.g\. list\(\.\.\.\)\)"),
    (iter([1, 2]), r"set_dataset got a list_iterator, not a sized, indexable collection"),
    (map(str, [1, 2]), r"set_dataset got a map, not a sized, indexable collection"),
    ({1, 2}, r"set_dataset got a set, not a sized, indexable collection"),
    (42, r"set_dataset got a int, not a sized, indexable collection"),
    (np.array(3), r"set_dataset got a ndarray that is not a collection"),
    (torch.tensor(3), r"set_dataset got a Tensor that is not a collection"),
    ([], r"set_dataset got no prompts"),
])
def test_engine_set_dataset_refuses_what_is_not_a_prompt_list(tiny_flow_env, prompts, message):
    echo, trainer = tiny_flow_env

    @flow
    def rollout(batch):
        return echo.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    with pytest.raises(ConfigError, match=message):
        Engine(rollout, train).set_dataset(prompts)


def test_evaluator_set_dataset_names_itself(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def evaluate(batch):
        return echo.forward_step(batch)

    with pytest.raises(ConfigError, match=r"Evaluator\.set_dataset got a single str \('2\+2'\)"):
        Evaluator(evaluate).set_dataset("2+2")


class FailsAt(ListDataset):
    def __getitem__(self, i):
        if i == 3:
            raise KeyError("missing field 'x'")
        return super().__getitem__(i)


class OwnCollate(ListDataset):
    def __init__(self, prompts):
        self.prompts = list(prompts)  # no `collate_fn = None`: the method is used


class BadCollate(OwnCollate):
    def collate_fn(self, samples):
        raise RuntimeError("cannot stack")


class ListCollate(OwnCollate):
    def collate_fn(self, samples):
        return samples


class Ragged(ListDataset):
    def __getitem__(self, i):
        return {"x": torch.zeros(i + 1)}  # default collation cannot stack unequal rows


class BatchedFetch(ListDataset):
    def __getitems__(self, indices):
        raise IndexError(f"no rows {indices}")


class NoLen(Dataset):
    collate_fn = None

    def __len__(self):
        raise RuntimeError("length unknown")


def test_getitem_failure_names_dataset_and_index():
    with pytest.raises(DatasetError, match=r"prompt dataset FailsAt: __getitem__\(3\) raised "
                                           r"KeyError") as e:
        PromptStream(FailsAt(range(8)), batch_size=4, seed=0, shuffle=False).next()
    assert isinstance(e.value.__cause__, KeyError)


def test_collate_fn_failure_names_dataset_and_indices():
    with pytest.raises(DatasetError, match=r"prompt dataset BadCollate: collate_fn failed on the "
                                           r"samples at indices \[0, 1\]: RuntimeError: cannot "
                                           r"stack") as e:
        PromptStream(BadCollate(range(4)), batch_size=2, seed=0, shuffle=False).next()
    assert isinstance(e.value.__cause__, RuntimeError)


def test_default_collation_failure_names_the_indices():
    with pytest.raises(DatasetError, match=r"prompt dataset Ragged: collate_fn failed on the "
                                           r"samples at indices \[0, 1, 2\]"):
        PromptStream(Ragged(range(6)), batch_size=3, seed=0, shuffle=False).next()


def test_collate_fn_returning_a_list_names_the_dataset():
    with pytest.raises(DatasetTypeError, match=r"the collate_fn of prompt dataset ListCollate "
                                               r"returned a list"):
        PromptStream(ListCollate(range(4)), batch_size=2, seed=0, shuffle=False).next()


def test_getitems_failure_names_the_indices():
    with pytest.raises(DatasetError, match=r"prompt dataset BatchedFetch: __getitems__\(\[0, 1\]\) "
                                           r"raised IndexError"):
        PromptStream(BatchedFetch(range(4)), batch_size=2, seed=0, shuffle=False).next()


def test_dataset_len_failure_names_owner_and_class():
    with pytest.raises(DatasetError, match=r"len\(\) of the dataset from policy\.build_dataset "
                                           r"\(NoLen\) failed: RuntimeError: length unknown"):
        check_dataset(NoLen(), "policy")


def test_build_dataset_returning_a_list_is_a_flowrl_type_error():
    with pytest.raises(DatasetTypeError, match=r"policy\.build_dataset must return a "
                                               r"torch\.utils\.data\.Dataset, got list"):
        check_dataset([1, 2], "policy")
    assert issubclass(DatasetTypeError, FlowRLError) and issubclass(DatasetTypeError, TypeError)


@pytest.mark.parametrize("batch, message", [
    ({"x": torch.zeros(4), "y": np.zeros(3)}, r"key 'y' has 3 rows but the batch has 4 samples"),
    ({"x": np.zeros((2, 5)), "y": [1, 2, 3]}, r"key 'y' has 3 items but the batch has 2 samples"),
    ({"x": torch.zeros(2), "y": torch.zeros(5, 1)},
     r"key 'y' has 5 rows but the batch has 2 samples"),
    ({"scale": 0.5, "name": "run"},
     r"cannot tell the batch size of a batch with keys \['name', 'scale'\]"),
])
def test_ragged_batches_name_the_key(batch, message):
    with pytest.raises(BatchError, match=message):
        split_batch(batch)


def test_learn_with_a_failing_dataset_names_dataset_and_index(tiny_flow_env):
    echo, trainer = tiny_flow_env

    class FailingEcho(Echo):
        def build_dataset(self, prompts, is_eval=False):
            return FailsAt(prompts)

    echo.__class__ = FailingEcho

    @flow
    def rollout(batch):
        return echo.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train)
    engine.set_dataset(check_prompts(tuple(range(32)), "test"))
    with pytest.raises(DatasetError, match=r"prompt dataset FailsAt: __getitem__\(3\) raised"):
        engine.learn()
