"""fileio: atomic writes (fsync of the file, rename, fsync of its directory) and UTF-8 / JSON
reads whose errors are one line naming the file and where in it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from bert_jax import fileio
from bert_jax.errors import DataError


def _synced(monkeypatch) -> list[str]:
  """Records what each os.fsync flushed: 'dir <path>' or 'file <path>'."""
  done, real = [], os.fsync

  def fsync(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    done.append(("dir " if stat.S_ISDIR(os.fstat(fd).st_mode) else "file ") + path)
    real(fd)
  monkeypatch.setattr(os, "fsync", fsync)
  return done


@pytest.mark.parametrize("write, content", [
    (lambda p: fileio.write_text_atomic(p, "café\n"), "café\n"),
    (lambda p: fileio.write_bytes_atomic(p, b"\x00\x01"), "\x00\x01"),
    (lambda p: fileio.write_json_atomic(p, {"q": "café"}), '{"q": "café"}'),
    (lambda p: fileio.write_json_atomic(p, {"a": 1}, indent=2), '{\n  "a": 1\n}'),
])
def test_atomic_writes_fsync_the_file_then_the_directory(tmp_path, monkeypatch, write, content):
  path = tmp_path / "sub" / "out.txt"
  synced = _synced(monkeypatch)
  write(str(path))
  assert path.read_text(encoding="utf-8") == content
  assert synced[-1] == f"dir {tmp_path / 'sub'}"
  assert synced[0].startswith(f"file {tmp_path / 'sub' / '.tmp-'}")
  assert os.listdir(path.parent) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "out.json"
  fileio.write_json_atomic(str(path), {"old": True})
  with pytest.raises(TypeError):
    fileio.write_json_atomic(str(path), {"bad": object()})

  def full(*_):
    raise OSError(28, "No space left on device")
  with monkeypatch.context() as m:
    m.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space"):
      fileio.write_json_atomic(str(path), {"new": True})
  assert json.loads(path.read_text()) == {"old": True}
  assert os.listdir(tmp_path) == ["out.json"]
  fileio.write_json_atomic(str(path), {"when": object()}, default=lambda _: "now")
  assert json.loads(path.read_text()) == {"when": "now"}


def test_read_text_drops_a_bom_and_names_the_byte_offset_of_bad_utf8(tmp_path):
  path = tmp_path / "a.txt"
  path.write_bytes(b"\xef\xbb\xbfok\n")
  assert fileio.read_text(str(path)) == "ok\n"
  assert fileio.read_text(str(path), bom=False) == "\ufeffok\n"
  path.write_bytes(b"a\r\nb\rc\n")
  assert fileio.read_text(str(path)) == "a\r\nb\rc\n"
  assert fileio.read_text(str(path), universal_newlines=True) == "a\nb\nc\n"
  path.write_bytes(b"ok\ncaf\xe9\n")
  with pytest.raises(DataError) as e:
    fileio.read_text(str(path), "convert it")
  assert str(e.value) == (f"{path}: invalid UTF-8 at byte offset 6 (invalid continuation "
                          "byte); convert it")
  with pytest.raises(FileNotFoundError):
    fileio.read_text(str(tmp_path / "missing.txt"))


def test_json_errors_name_the_line(tmp_path):
  path = tmp_path / "a.json"
  path.write_text('{"a": [\n  1,\n  ]}')
  with pytest.raises(DataError, match=rf"^{path}:3:3: not valid JSON \(Expecting value\); "
                                      "delete it$"):
    fileio.read_json(str(path), "delete it")
  path.write_text('{"a": 1}')
  assert fileio.read_json(str(path)) == {"a": 1}
  rows = fileio.json_lines("x.jsonl", ['{"a": 1}', "", "  ", "[2]"])
  assert list(rows) == [(1, {"a": 1}), (4, [2])]
  with pytest.raises(DataError, match=r"^x.jsonl:2: not valid JSON \(Expecting value at column "
                                      r"7\)$"):
    list(fileio.json_lines("x.jsonl", ['{"a": 1}', '{"a": }']))
