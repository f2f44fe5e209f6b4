"""Column mapping, required columns and chat-template prompts (with a template-bearing stand-in
tokenizer here; a real Hugging Face tokenizer in tests/backends/test_hf_text.py)."""

from __future__ import annotations

import json

import pytest

from flowrl.data import DataConfig, DataFileError, load_dataset_spec, parse_data_config
from flowrl.errors import ConfigError


class TemplateTokenizer:
    """Renders messages like a chat template: ``<|role|>content`` ... ``<|assistant|>``."""

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<|{m['role']}|>{m['content']}" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def write(tmp_path, rows, name="d.jsonl"):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


def test_mapping_renames_and_passes_other_columns_through(tmp_path):
    name = write(tmp_path, [{"q": "1+1=", "a": "2", "pos": "x", "neg": "y", "id": 7}])
    cfg = DataConfig(path=name, kind="preference",
                     columns={"q": "prompt", "a": "answer", "pos": "chosen", "neg": "rejected"})
    assert load_dataset_spec(cfg, tmp_path).train == [
        {"prompt": "1+1=", "answer": "2", "chosen": "x", "rejected": "y", "id": 7}]


def test_a_mapped_column_missing_names_file_row_and_column(tmp_path):
    name = write(tmp_path, [{"q": "a"}, {"question": "b"}])
    with pytest.raises(DataFileError) as err:
        load_dataset_spec(DataConfig(path=name, columns={"q": "prompt"}), tmp_path)
    assert str(err.value) == (f"data file {tmp_path / name} row 1: no column 'q' (mapped to "
                              f"'prompt' by data.columns); the row has question")
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("kind,row,missing", [
    ("rl", {"question": "a"}, "prompt"),
    ("preference", {"prompt": "a", "chosen": "x"}, "rejected"),
    ("sft", {"prompt": "a", "completion": None}, "completion"),
])
def test_required_columns_by_kind(tmp_path, kind, row, missing):
    name = write(tmp_path, [row])
    with pytest.raises(DataFileError) as err:
        load_dataset_spec(DataConfig(path=name, kind=kind), tmp_path)
    msg = str(err.value)
    assert f"data file {tmp_path / name} row 0: missing column '{missing}' (needed for " \
           f"kind={kind})" in msg
    assert f"data.columns: {{your_name: {missing}}}" in msg


def test_text_columns_must_be_text(tmp_path):
    name = write(tmp_path, [{"prompt": "a", "chosen": "x", "rejected": ["y"]}])
    with pytest.raises(DataFileError, match=r"row 0: column 'rejected' is a list, expected a "
                                            r"string"):
        load_dataset_spec(DataConfig(path=name, kind="preference"), tmp_path)


def test_unknown_or_duplicate_mapping_targets():
    with pytest.raises(ConfigError, match="data.columns: 'promt' \\(for your column 'q'\\) is "
                                          "not a flowrl column; did you mean 'prompt'?"):
        parse_data_config({"path": "d.jsonl", "columns": {"q": "promt"}})
    with pytest.raises(ConfigError, match="data.columns: 'a' and 'b' are both mapped to 'answer'"):
        parse_data_config({"path": "d.jsonl", "columns": {"a": "answer", "b": "answer"}})


def test_message_prompts_rendered_with_the_chat_template(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="}]
    name = write(tmp_path, [{"chat": msgs, "answer": "2"}, {"chat": "2+2=", "answer": "4"}])
    cfg = DataConfig(path=name, columns={"chat": "prompt"})
    rows = load_dataset_spec(cfg, tmp_path, tokenizer=TemplateTokenizer()).train
    assert rows[0]["prompt"] == "<|system|>Be brief.<|user|>1+1=<|assistant|>"
    assert rows[0]["messages"] == msgs and rows[0]["answer"] == "2"
    assert rows[1] == {"prompt": "2+2=", "answer": "4"}  # auto: strings stay as written
    always = DataConfig(path=name, columns={"chat": "prompt"}, chat_template="always")
    rows = load_dataset_spec(always, tmp_path, tokenizer=TemplateTokenizer()).train
    assert rows[1]["prompt"] == "<|user|>2+2=<|assistant|>"


def test_message_prompt_errors_name_file_and_row(tmp_path):
    msgs = [{"role": "user", "content": "hi"}]
    name = write(tmp_path, [{"prompt": "a"}, {"prompt": msgs}])
    with pytest.raises(DataFileError, match=r"row 1: the prompt is a list of messages, which "
                                            r"needs a tokenizer with a chat template \(got "
                                            r"NoneType\)"):
        load_dataset_spec(DataConfig(path=name), tmp_path)
    with pytest.raises(DataFileError, match=r"row 1: column 'prompt' is a list of messages but "
                                            r"data.chat_template is 'never'"):
        load_dataset_spec(DataConfig(path=name, chat_template="never"), tmp_path,
                          tokenizer=TemplateTokenizer())
    bad = write(tmp_path, [{"prompt": [{"text": "hi"}]}], "bad.jsonl")
    with pytest.raises(DataFileError, match=r"bad.jsonl row 0: column 'prompt' is a list; "
                                            r"expected a string or a list of \{role, content\}"):
        load_dataset_spec(DataConfig(path=bad), tmp_path, tokenizer=TemplateTokenizer())


def test_a_failing_template_names_file_and_row(tmp_path):
    class NoTemplate:
        def apply_chat_template(self, *a, **k):
            raise ValueError("tokenizer.chat_template is not set")

    name = write(tmp_path, [{"prompt": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataFileError, match=r"d.jsonl row 0: the tokenizer's chat template "
                                            r"failed \(ValueError: tokenizer.chat_template is "
                                            r"not set\)"):
        load_dataset_spec(DataConfig(path=name), tmp_path, tokenizer=NoTemplate())
