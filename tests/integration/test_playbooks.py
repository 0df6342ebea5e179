"""setup.yml and bench.yml, run for real against this machine, and every platform in check mode.

The real runs install apt packages, /opt/dlstation, a systemd unit and ~/.keras/keras.json:
they run only with DLSTATION_TEST_PROVISION=1 (CI sets it). Check mode and syntax always run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.facts import platforms
from bench.results import document as results
from tests.conftest import REPO

ROLES = REPO / "playbooks" / "roles"


def ansible_playbook(
    *args: str, json_output: bool = False, timeout: float = 1500
) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert executable, "ansible-playbook comes with the dev extra (pip install -e .[dev])"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
    }
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    return subprocess.run(
        [executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def recap(output: str) -> dict[str, int]:
    line = next(
        line for line in output.splitlines() if line.startswith("localhost") and "ok=" in line
    )
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """setup.yml on this machine: the CPU path end to end."""
    fetched = tmp_path_factory.mktemp("verify")
    done = ansible_playbook("setup.yml", "-e", f"verify_fetch_dir={fetched}")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return {"first": done, "fetched": fetched}


@pytest.mark.provision
def test_setup_provisions_this_machine(provisioned: dict[str, Any]) -> None:
    output = provisioned["first"].stdout
    assert recap(output)["failed"] == 0
    assert "NVIDIA GPU: none found" in output
    assert "verdict: PASS" in output
    assert "systemd is not running here" in output, "the play says the unit was not started"
    last_task = output[output.rindex("TASK [") : output.index("PLAY RECAP")]
    assert "Say where the notebooks are" in last_task and "imdb.ipynb" in last_task
    venv = Path("/opt/dlstation/venv")
    assert (venv / "bin" / "dlbench").is_file() and (venv / "bin" / "jupyter").is_file()
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import keras; print(keras.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    python = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.stdout.strip() == platforms.versions(python)["keras"], "this Python's row"
    assert Path("/etc/systemd/system/dlstation-jupyter.service").is_file()
    token = Path("/opt/dlstation/jupyter/token.env")
    assert token.stat().st_mode & 0o077 == 0
    keras_json = json.loads((Path.home() / ".keras" / "keras.json").read_text())
    assert keras_json["backend"] == "tensorflow"
    result: Mapping[str, Any] = results.load(provisioned["fetched"] / "localhost.json")
    assert result["status"] == "complete"
    assert result["runs"][0]["backend"]["device_type"] == "CPU"


@pytest.mark.provision
def test_second_run_changes_nothing(provisioned: dict[str, Any]) -> None:
    done = ansible_playbook("setup.yml", "-e", f"verify_fetch_dir={provisioned['fetched']}")
    assert done.returncode == 0, done.stdout[-3000:]
    counts = recap(done.stdout)
    assert counts["changed"] == 0, [x for x in done.stdout.splitlines() if x.startswith("changed")]
    assert counts["failed"] == 0


def test_tags_run_only_their_role() -> None:
    done = ansible_playbook("setup.yml", "--tags", "keras_env", "--list-tasks")
    assert done.returncode == 0
    # Ansible tags each role's argument check `always`; those lines are not the role's work.
    listed = "\n".join(x for x in done.stdout.splitlines() if "Validating arguments" not in x)
    assert "keras_env : Create the venv" in listed
    assert (
        "jupyter :" not in listed and "verify :" not in listed and "nvidia_driver :" not in listed
    )


@pytest.mark.provision
def test_bench_yml_reports_a_fleet(provisioned: dict[str, Any], tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"alias-a": local, "alias-b": local}}}))
    done = ansible_playbook(
        "-i",
        str(inventory),
        "bench.yml",
        "-e",
        f"bench_fetch_dir={tmp_path / 'fleet'}",
        "-e",
        "bench_args='reuters --synthetic --epochs 2'",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    fetched = sorted(p.name for p in (tmp_path / "fleet").glob("*.json"))
    assert fetched == ["alias-a.json", "alias-b.json"]
    report = (tmp_path / "fleet" / "report" / "report.md").read_text()
    assert "dlbench fleet report" in report and report.count("reuters (synthetic)") >= 1
    assert (tmp_path / "fleet" / "report" / "report.html").stat().st_size > 10_000


def check_mode(
    overrides: dict[str, Any], extra: dict[str, Any] | None = None, tmp: Path | None = None
) -> dict[str, Any]:
    """setup.yml in check mode up to the venv, with the preflight facts forced."""
    variables = {"preflight_overrides": overrides, **(extra or {})}
    if tmp is not None:  # plan the venv in a folder that does not exist: nothing is created
        variables |= {"keras_env_root": str(tmp / "root"), "keras_env_venv": str(tmp / "venv")}
    done = ansible_playbook(
        "setup.yml",
        "--check",
        "--tags",
        "preflight,nvidia_driver,cuda" + (",keras_env" if tmp is not None else ""),
        "-e",
        json.dumps(variables),
        json_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("{") :])


def task_args(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The module arguments a task (its name, or the start of it) ran with on localhost.

    None if it was skipped or absent.
    """
    for task in report["plays"][0]["tasks"]:
        if task["task"]["name"].split(" : ", 1)[-1].startswith(name):
            result = task["hosts"]["localhost"]
            if result.get("skipped"):
                return None
            args: dict[str, Any] = result.get("invocation", {}).get("module_args", {})
            return args
    return None


def messages(report: dict[str, Any], name: str) -> str:
    """What a debug task said on localhost, all loop items together."""
    said = []
    for task in report["plays"][0]["tasks"]:
        if task["task"]["name"].split(" : ", 1)[-1] == name:
            result = task["hosts"]["localhost"]
            said += [str(r.get("msg", "")) for r in result.get("results", [result])]
    return " ".join(" ".join(said).split())


BACKENDS = ["tensorflow", "jax", "torch"]


def planned_venv(report: dict[str, Any]) -> list[str]:
    """The requirements keras_env would pip install, without dlstation's own tools."""
    args = task_args(report, "Install Keras and the backends")
    assert args is not None, "keras_env planned no venv"
    return [name for name in args["name"] if name != "nvidia-ml-py"]


GPU_HOST = {"gpu_present": True, "driver_working": False, "dlami": False, "secure_boot": False}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("platform", "repo", "venv"),
    [
        (
            "Ubuntu-22.04",
            "ubuntu2204",
            [
                "keras==3.12.4",
                "tensorflow[and-cuda]==2.21.0",
                "jax[cuda12]==0.6.2",
                "torch==2.13.0",
            ],
        ),
        (
            "Ubuntu-24.04",
            "ubuntu2404",
            [
                "keras==3.15.1",
                "tensorflow[and-cuda]==2.21.0",
                "jax[cuda12]==0.10.2",
                "torch==2.13.0",
            ],
        ),
        (
            "Debian-12",
            "debian12",
            [
                "keras==3.15.1",
                "tensorflow[and-cuda]==2.21.0",
                "jax[cuda12]==0.10.2",
                "torch==2.13.0",
            ],
        ),
    ],
)
def test_each_platform_in_check_mode(
    platform: str, repo: str, venv: list[str], tmp_path: Path
) -> None:
    """A bare GPU host of each platform: driver, CUDA, and the venv for its Python."""
    distribution, version = platform.split("-")
    python = platforms.matrix()["platforms"][platform]["python"]
    report = check_mode(
        {**GPU_HOST, "distribution": distribution, "version": version, "python": python},
        {"cuda_install_toolkit": True, "cuda_version": "12.8", "keras_env_backends": BACKENDS},
        tmp_path,
    )
    keyring = task_args(report, "Download cuda-keyring")
    assert keyring is not None
    assert keyring["url"] == (
        f"https://developer.download.nvidia.com/compute/cuda/repos/{repo}/x86_64/"
        "cuda-keyring_1.1-1_all.deb"
    )
    assert task_args(report, "Install the driver")["name"] == ["nvidia-open"]  # type: ignore[index]
    cuda = task_args(report, "Install the CUDA toolkit and cuDNN, version 12.8")
    assert cuda is not None and cuda["name"] == ["cuda-toolkit-12-8", "cudnn9-cuda-12"]
    blacklist = task_args(report, "Keep Nouveau away from the GPU")
    assert blacklist is not None and blacklist["dest"] == "/etc/modprobe.d/blacklist-nouveau.conf"
    assert planned_venv(report) == venv
    assert planned_venv(report) == platforms.requirements(python, "gpu", BACKENDS)
    assert not tmp_path.joinpath("root").exists()


@pytest.mark.slow
def test_driver_choices_in_check_mode() -> None:
    host = {**GPU_HOST, "distribution": "Ubuntu", "version": "24.04"}
    proprietary = check_mode(
        host, {"nvidia_driver_open_modules": False, "nvidia_driver_branch": "570"}
    )
    assert task_args(proprietary, "Install the driver")["name"] == ["cuda-drivers-570"]  # type: ignore[index]
    canonical = check_mode(
        host, {"nvidia_driver_source": "canonical", "nvidia_driver_branch": "580"}
    )
    assert task_args(canonical, "Install the driver")["name"] == [  # type: ignore[index]
        "nvidia-driver-580-server-open",
        "nvidia-utils-580-server",
    ]
    assert task_args(canonical, "Download cuda-keyring") is None


@pytest.mark.slow
def test_dlami_installs_nothing_in_check_mode(tmp_path: Path) -> None:
    """A 22.04 DLAMI: no driver or CUDA; its venv from Python 3.10's row, jax as the user asked."""
    report = check_mode(
        {
            "distribution": "Ubuntu",
            "version": "22.04",
            "python": "3.10",
            "gpu_present": True,
            "driver_working": True,
            "dlami": True,
        },
        {
            "cuda_install_toolkit": True,
            "keras_env_backends": ["jax"],
            "keras_env_versions": {"jax": "0.10.2"},
        },
        tmp_path,
    )
    for task in report["plays"][0]["tasks"]:
        name = task["task"]["name"]
        result = task["hosts"].get("localhost", {})
        if name.startswith(("nvidia_driver :", "cuda :")) and "apt" in str(result):
            assert result.get("skipped"), f"{name} would install on a DLAMI"
    assert task_args(report, "Install the driver") is None
    assert task_args(report, "Download cuda-keyring") is None
    assert planned_venv(report) == ["keras==3.12.4", "jax[cuda12]==0.10.2"], "the user's jax wins"
    said = messages(report, "Say where explicit versions leave the table")
    assert "keras_env_versions asks jax 0.10.2; the table gives Python 3.10 jax 0.6.2" in said
    assert "and jax 0.10.2 from Python 3.11" in said


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"preflight_overrides": {"distribution": "Fedora", "version": "40"}},
            "Fedora 40 is not supported: dlstation sets up Ubuntu 22.04, Debian 12, Ubuntu 24.04",
        ),
        (
            {"keras_env_backends": ["tensorflow", "theano"]},
            "keras_env_backends has theano: set it to a list of tensorflow, jax, torch",
        ),
    ],
)
def test_bad_input_fails_in_preflight(variables: dict[str, Any], message: str) -> None:
    done = ansible_playbook(
        "setup.yml", "--tags", "preflight", "-e", json.dumps(variables), timeout=300
    )
    assert done.returncode != 0
    flat = " ".join((done.stdout + done.stderr).split())
    assert message in flat
    assert "preflight : Check" in done.stdout


@pytest.mark.slow
def test_unknown_cuda_version_fails_in_the_cuda_roles_arguments() -> None:
    variables = {
        "preflight_overrides": GPU_HOST | {"distribution": "Ubuntu", "version": "24.04"},
        "cuda_version": "11.2",
    }
    done = ansible_playbook(
        "setup.yml", "--check", "--tags", "preflight", "-e", json.dumps(variables), timeout=300
    )
    assert done.returncode != 0
    flat = " ".join((done.stdout + done.stderr).split())
    assert "value of cuda_version must be one of: 12.6, 12.8, 13.0, got: 11.2" in flat
    assert "cuda : Validating arguments" in done.stdout


def test_every_platform_has_its_os_data() -> None:
    """vars/<distribution>-<version>.yml in each role with OS data, one per table platform."""
    expected = {f"{p}.yml" for p in platforms.matrix()["platforms"]}
    for role in ("nvidia_driver", "keras_env"):
        found = {p.name for p in (ROLES / role / "vars").glob("*-*.yml")}
        assert found == expected, role


def test_role_defaults_match_their_argument_specs() -> None:
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        options = specs["main"]["options"]
        assert set(defaults) == set(options), role.name
        for name, value in defaults.items():
            assert name.startswith(role.name + "_"), f"{name} lacks the {role.name}_ prefix"
            assert options[name]["default"] == value, f"{role.name}: {name} default differs"
            assert options[name].get("description"), f"{role.name}: {name} undocumented"


@pytest.mark.slow
def test_check_mode_runs_through_on_a_fresh_machine(tmp_path: Path) -> None:
    """--check --diff against paths that do not exist yet: it plans, and creates nothing."""
    fresh = tmp_path / "fresh"
    done = ansible_playbook(
        "setup.yml",
        "--check",
        "--diff",
        "-e",
        f"keras_env_root={fresh}",
        "-e",
        f"keras_env_venv={fresh}/venv",
        "-e",
        f"verify_fetch_dir={tmp_path / 'fetched'}",
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert recap(done.stdout)["failed"] == 0
    assert "Check mode: verification needs the real machine" in done.stdout
    assert not fresh.exists()
