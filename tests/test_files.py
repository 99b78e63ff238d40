"""The one file-read ladder: every way a given file can be unusable fails with one line naming the
file, what it is for and the fix, as the caller's error class."""

from __future__ import annotations

from pathlib import Path

import pytest

from logclass.core.files import FileReadError, read_bytes, read_json, read_text, read_yaml
from logclass.errors import LogclassError


class _RulesError(LogclassError):
    pass


def test_a_missing_file_names_it_and_its_use(tmp_path: Path) -> None:
    with pytest.raises(FileReadError, match=r"cannot read rules file .*nope\.yaml: No such file or directory; check"):
        read_yaml(tmp_path / "nope.yaml", "rules file")


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileReadError, match="it is a directory; give the path of a file"):
        read_text(tmp_path, "labels file")


def test_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"labels:\n  caf\xe9: x\n")
    with pytest.raises(FileReadError, match=r"labels file .* is not UTF-8 text \(byte 13\): save it as UTF-8"):
        read_yaml(path, "labels file")


def test_invalid_yaml_and_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed\n", encoding="utf-8")
    problem = r"while parsing a flow sequence: expected ',' or '\]', but got '<stream end>' at line 2, column 1"
    with pytest.raises(FileReadError, match=rf"rules file .* is not valid YAML: {problem}; correct it there$"):
        read_yaml(bad, "rules file")
    broken = tmp_path / "manifest.json"
    broken.write_text('{"a": ', encoding="utf-8")
    with pytest.raises(FileReadError, match=r"manifest .* is not valid JSON: Expecting value: line 1 column 7"):
        read_json(broken, "manifest")


def test_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text("[" + "1," * 100 + "1]", encoding="utf-8")
    with pytest.raises(FileReadError, match="larger than 64 bytes"):
        read_json(path, "manifest", max_bytes=64)
    assert read_bytes(path, "manifest", max_bytes=None) == path.read_bytes()
    assert len(read_bytes(path, "manifest", max_bytes=len(path.read_bytes()))) == len(path.read_bytes())


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(FileReadError, match="nested too deeply"):
        read_json(deep, "manifest")
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(FileReadError, match="nested too deeply"):
        read_yaml(deep_yaml, "config file")


def test_the_callers_error_class(tmp_path: Path) -> None:
    with pytest.raises(_RulesError, match="cannot read rules file"):
        read_yaml(tmp_path / "nope.yaml", "rules file", error=_RulesError)


def test_good_files_read_back(tmp_path: Path) -> None:
    yaml_path = tmp_path / "x.yaml"
    yaml_path.write_text("a: [1, two]\n", encoding="utf-8")
    assert read_yaml(yaml_path, "x") == {"a": [1, "two"]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert read_yaml(empty, "x") is None
    json_path = tmp_path / "x.json"
    json_path.write_text('{"é": 1}', encoding="utf-8")
    assert read_json(json_path, "x") == {"é": 1}


def test_a_yaml_alias_bomb_is_refused_before_anything_walks_it(tmp_path: Path) -> None:
    # 9 levels of 9 aliases: 522 bytes that expand to 9**10 values when walked.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "rules.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(FileReadError, match=r"expands to more than 200,000 values \(aliases counted in full\)"):
        read_yaml(bomb, "rules file")


def test_anchors_and_aliases_within_the_bound_are_kept(tmp_path: Path) -> None:
    shared = tmp_path / "config.yaml"
    shared.write_text("base: &b {x: 1}\nother: *b\nmany: [*b, *b]\n", encoding="utf-8")
    assert read_yaml(shared, "config file") == {"base": {"x": 1}, "other": {"x": 1}, "many": [{"x": 1}, {"x": 1}]}
