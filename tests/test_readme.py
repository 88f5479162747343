"""The README's CLI reference is generated from --help (cog); this fails when they drift apart."""
import pathlib
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_cli_reference_in_readme_is_current():
    pytest.importorskip("cogapp")
    out = subprocess.run([sys.executable, "-m", "cogapp", "--check", str(README)], capture_output=True, text=True)
    assert out.returncode == 0, "README.md is stale: run `cog -r README.md`\n" + out.stdout + out.stderr


def test_ci_runs_the_readmes_test_command():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in text, "the README's second command and .ci/run differ"
