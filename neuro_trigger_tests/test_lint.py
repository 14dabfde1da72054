"""The code stays ruff clean (the rules are in pyproject.toml), and names the encoding of every text file."""
import ast
import shutil
import subprocess
import sys

import pytest

from neuro_trigger import REPO_ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(__import__("pathlib").Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed beside this Python (it is in requirements.txt)")
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


TEXT_IO = {"open", "read_text", "write_text", "FileHandler", "read_csv", "to_csv", "PackageLoader"}
MODULE_OPENS = {"gzip", "bz2", "lzma", "io", "codecs"}  # module.open(path, mode): the mode is the second argument


def _text_io_without_encoding(node: ast.Call) -> str | None:
    """The name of the text reading or writing call `node` when it leaves the encoding to the locale, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in TEXT_IO or any(k.arg == "encoding" for k in node.keywords):
        return None
    if name == "read_text" and node.args:  # read_text("utf-8")
        return None
    module = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
    if name == "open":
        if module == "os":
            return None  # a file descriptor: bytes
        at = 0 if isinstance(func, ast.Attribute) and module not in MODULE_OPENS else 1  # Path.open(mode)
        mode = node.args[at] if len(node.args) > at else next((k.value for k in node.keywords if k.arg == "mode"),
                                                               None)
        if isinstance(mode, ast.Constant) and "b" in str(mode.value):
            return None
    if name in ("read_csv", "to_csv"):
        target = node.args[0] if node.args else next((k.value for k in node.keywords
                                                      if k.arg in ("filepath_or_buffer", "path_or_buf")), None)
        if target is None or isinstance(target, ast.Call):
            return None  # to_csv() returning its text, or a buffer of bytes (pandas reads those as UTF-8)
    return name


def test_every_text_file_names_its_encoding():
    """Under an ASCII locale (LANG=C, PYTHONUTF8=0) Python's default text encoding is ASCII: every text file the
    package reads or writes names its encoding (issue 21, item 7)."""
    found = []
    for path in sorted((REPO_ROOT / "neuro_trigger").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (name := _text_io_without_encoding(node)):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
    assert not found, "text I/O without an encoding:\n" + "\n".join(found)
