"""The jupyter role's notebook part, run for real on localhost into temporary folders."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import api
from tests.conftest import REPO
from tests.harness.runs import play_on_localhost

SHIPPED = ["imdb.ipynb", "reuters.ipynb", "this-machine.ipynb"]


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "notebooks": tmp_path / "home" / "dlstation-notebooks",
        "pristine": tmp_path / "opt" / "notebooks",
        "kernel": tmp_path / "venv-share" / "kernels" / "dlstation",
        "playbook": tmp_path / "play.yml",
    }


def play(folders: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """The role's notebook tasks (tag jupyter_notebooks) against this venv and temp folders."""
    folders["playbook"].write_text(
        "- name: Jupyter notebooks\n  hosts: localhost\n  gather_facts: false\n  roles: [jupyter]\n"
    )
    variables = {
        "jupyter_user": getpass.getuser(),
        "ansible_user_id": getpass.getuser(),  # no fact gathering: the role's default reads it
        "keras_env_venv": sys.prefix,
        "keras_env_root": str(folders["pristine"].parent),
        "preflight_facts": {"local": False},
        # The role alone: its keras_env dependency (and preflight under it) is this venv.
        "dlstation_configure_keras_env": False,
        # What setup.yml passes every role: the version table's path.
        "dlstation_platforms_file": str(REPO / "bench" / "facts" / "platforms.json"),
        "ansible_python_interpreter": sys.executable,
        # The role's derived paths, moved out of the home and the venv for the test.
        "__jupyter_notebook_dir": str(folders["notebooks"]),
        "__jupyter_pristine_dir": str(folders["pristine"]),
        "__jupyter_kernel_dir": str(folders["kernel"]),
    }
    return play_on_localhost(
        folders["playbook"],
        "-c",
        "local",
        "--tags",
        "jupyter_notebooks",
        "-e",
        json.dumps(variables),
    )


def changed(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = re.search(r"^localhost\s+:.*changed=(\d+).*failed=(\d+)", done.stdout, re.MULTILINE)
    assert counts and counts[2] == "0", done.stdout[-2000:]
    return int(counts[1])


@pytest.mark.slow
def test_notebooks_install_once_and_a_users_change_is_never_overwritten(
    folders: dict[str, Path],
) -> None:
    first = play(folders)
    assert changed(first) > 0
    shipped = api.notebooks_dir()
    for name in SHIPPED:
        assert (folders["notebooks"] / name).read_bytes() == (shipped / name).read_bytes()
    kernel = json.loads((folders["kernel"] / "kernel.json").read_text())
    python = f"{sys.prefix}/bin/python"
    assert kernel["argv"] == [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert kernel["display_name"] == "dlstation (Keras 3, tensorflow)"
    assert kernel["env"] == {"KERAS_BACKEND": "tensorflow"}
    assert f"notebooks: {', '.join(SHIPPED)} in {folders['notebooks']}" in first.stdout
    assert "tunnel: ssh -N -L 8888:127.0.0.1:8888" in first.stdout
    assert "/lab/tree/dlstation-notebooks" in first.stdout

    edited = folders["notebooks"] / "imdb.ipynb"
    edited.write_text(edited.read_text().replace("keras.utils.set_random_seed(0)", "# mine"))
    (folders["notebooks"] / "this-machine.ipynb").unlink()
    second = play(folders)
    assert changed(second) == 1, "only the deleted notebook comes back"
    assert "# mine" in edited.read_text()
    assert "kept your changed imdb.ipynb" in second.stdout

    # As if the last run had installed an older reuters.ipynb that the user left alone.
    older = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
    (folders["pristine"] / "reuters.ipynb").write_text(older)
    (folders["notebooks"] / "reuters.ipynb").write_text(older)
    third = play(folders)
    assert changed(third) == 2, "the notebook and its pristine copy are updated"
    reuters = folders["notebooks"] / "reuters.ipynb"
    assert reuters.read_bytes() == (shipped / "reuters.ipynb").read_bytes()
    assert "# mine" in edited.read_text()

    assert changed(play(folders)) == 0
