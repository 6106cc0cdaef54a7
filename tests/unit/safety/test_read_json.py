"""``io_safety.read_json_object``: the one reader behind model, dictionary and induction-run config files."""

from pathlib import Path

import pytest

from mechscope.errors import ConfigError, ModelFileError
from mechscope.io_safety import atomic_write_json, read_json_object


def test_reads_what_atomic_write_json_wrote(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "c.json", {"a": [1, 2]})
    assert read_json_object(tmp_path / "c.json", ModelFileError) == {"a": [1, 2]}


@pytest.mark.parametrize(("text", "match"), [('{"a": 1', "is not valid JSON \\(truncated or corrupted\\?\\)"),
                                             ("[1, 2]", "must hold a JSON object, got list")])
def test_damaged_files_raise_the_callers_error(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "c.json").write_text(text)
    for error in (ModelFileError, ConfigError):
        with pytest.raises(error, match=match):
            read_json_object(tmp_path / "c.json", error)
    (tmp_path / "b.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        read_json_object(tmp_path / "b.json", ModelFileError)
