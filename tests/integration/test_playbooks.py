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
    # The last thing said: where the notebooks are (a platform that leaves a backend out says
    # that after it; this one leaves nothing out, so that task is skipped).
    tasks = output[: output.index("PLAY RECAP")].split("TASK [")[1:]
    said = [task for task in tasks if "skipping:" not in task]
    assert "Say which backends were left out" in tasks[-1] and "skipping:" in tasks[-1]
    assert "Say where the notebooks are" in said[-1] and "imdb.ipynb" in said[-1]
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


def table_venv(python: str, backends: list[str]) -> list[str]:
    """The exact GPU venv of that Python, spelled out: keras and each backend the table has."""
    row = platforms.versions(python)
    names = {"tensorflow": "tensorflow[and-cuda]", "jax": "jax[cuda12]", "torch": "torch"}
    return [f"keras=={row['keras']}"] + [f"{names[b]}=={row[b]}" for b in backends if b in row]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("platform", "repo", "driver", "pinned", "venv_backends"),
    [
        ("Ubuntu-22.04", "ubuntu2204", "nvidia-open-580", False, BACKENDS),
        ("Ubuntu-24.04", "ubuntu2404", "nvidia-open-580", False, BACKENDS),
        ("Debian-12", "debian12", "nvidia-open-580", False, BACKENDS),
        ("Debian-13", "debian13", "nvidia-open", True, BACKENDS),
        ("Ubuntu-26.04", "ubuntu2604", "nvidia-open", True, ["jax", "torch"]),
    ],
)
def test_each_platform_in_check_mode(  # noqa: PLR0917 (pytest passes parameters by position)
    platform: str, repo: str, driver: str, pinned: bool, venv_backends: list[str], tmp_path: Path
) -> None:
    """A bare GPU host of each platform: driver, CUDA, and the venv for its Python."""
    distribution, version = platform.split("-")
    python = platforms.matrix()["platforms"][platform]["python"]
    report = check_mode(
        {**GPU_HOST, "distribution": distribution, "version": version, "python": python},
        {"cuda_install_toolkit": True, "keras_env_backends": BACKENDS},
        tmp_path,
    )
    keyring = task_args(report, "Download cuda-keyring")
    assert keyring is not None
    assert keyring["url"] == (
        f"https://developer.download.nvidia.com/compute/cuda/repos/{repo}/x86_64/"
        "cuda-keyring_1.1-1_all.deb"
    )
    assert task_args(report, "Install the driver")["name"] == [driver]  # type: ignore[index]
    pin = task_args(report, "Hold the driver branch where the package names do not")
    assert (pin is not None) == pinned
    if pin is not None:  # its content is hidden from the callback (no_log of copy's content)
        assert pin["dest"] == "/etc/apt/preferences.d/dlstation-nvidia-branch"
    cuda = task_args(report, "Install the CUDA toolkit and cuDNN, version 12.9")
    assert cuda is not None and cuda["name"] == ["cuda-toolkit-12-9", "cudnn9-cuda-12"]
    blacklist = task_args(report, "Keep Nouveau away from the GPU")
    assert blacklist is not None and blacklist["dest"] == "/etc/modprobe.d/blacklist-nouveau.conf"
    assert planned_venv(report) == table_venv(python, venv_backends)
    assert planned_venv(report) == platforms.requirements(python, "gpu", BACKENDS)
    left_out = messages(report, "Say which backends were left out")
    if venv_backends == BACKENDS:
        assert left_out == ""
    else:
        why = f"tensorflow (no stable tensorflow wheel for Python {python}"
        assert left_out.startswith(f"Left out on Python {python}: {why}")
        assert "set keras_env_python to a Python 3.13 interpreter" in left_out
    assert not tmp_path.joinpath("root").exists()


@pytest.mark.slow
def test_tensorflow_missing_makes_jax_the_default(tmp_path: Path) -> None:
    """Ubuntu 26.04 with the default backend list [tensorflow]: JAX instead, and one line why."""
    report = check_mode(
        {"distribution": "Ubuntu", "version": "26.04", "python": "3.14", "gpu_present": False},
        {},
        tmp_path,
    )
    row = platforms.versions("3.14")
    assert planned_venv(report) == [f"keras=={row['keras']}", f"jax=={row['jax']}"]
    said = messages(report, "Say which backends were left out")
    assert said == (
        "Left out on Python 3.14: tensorflow ("
        + platforms.unavailable("3.14")["tensorflow"]
        + "); Keras's default is jax. To get tensorflow, set keras_env_python to a Python 3.13 "
        "interpreter in config.yml (e.g. keras_env_python: /usr/bin/python3.13)."
    )


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
    assert planned_venv(report) == [
        f"keras=={platforms.versions('3.10')['keras']}",
        "jax[cuda12]==0.10.2",
    ], "the user's jax wins"
    said = messages(report, "Say where explicit versions leave the table")
    assert (
        "keras_env_versions asks jax 0.10.2; the table gives Python 3.10 jax "
        + platforms.versions("3.10")["jax"]
    ) in said
    assert "and jax 0.10.2 from Python 3.11" in said


@pytest.mark.slow
def test_a_26_04_dlami_installs_the_backends_python_3_14_has(tmp_path: Path) -> None:
    """Ubuntu 26.04's DLAMI: no driver or CUDA; JAX and torch for Python 3.14, no TensorFlow."""
    report = check_mode(
        {
            "distribution": "Ubuntu",
            "version": "26.04",
            "python": "3.14",
            "gpu_present": True,
            "driver_working": True,
            "dlami": True,
        },
        {"cuda_install_toolkit": True, "keras_env_backends": BACKENDS},
        tmp_path,
    )
    assert task_args(report, "Install the driver") is None
    assert task_args(report, "Download cuda-keyring") is None
    assert planned_venv(report) == table_venv("3.14", ["jax", "torch"])
    assert "tensorflow" not in " ".join(planned_venv(report))
    assert "Left out on Python 3.14: tensorflow" in messages(
        report, "Say which backends were left out"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"preflight_overrides": {"distribution": "Fedora", "version": "40"}},
            "Fedora 40 is not supported: dlstation sets up Ubuntu 22.04, Debian 12, Ubuntu 24.04, "
            "Debian 13, Ubuntu 26.04",
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
    assert "value of cuda_version must be one of: 12.8, 12.9, 13.0, 13.2, got: 11.2" in flat
    assert "cuda : Validating arguments" in done.stdout


def test_every_platform_has_its_os_data() -> None:
    """nvidia_driver has vars/<distribution>-<version>.yml for each table platform, no others;
    keras_env's one family file serves them all."""
    expected = {f"{p}.yml" for p in platforms.matrix()["platforms"]}
    found = {p.name for p in (ROLES / "nvidia_driver" / "vars").glob("*-*.yml")}
    assert found == expected
    for role in ("nvidia_driver", "keras_env"):
        assert (ROLES / role / "vars" / "Debian.yml").is_file(), f"{role} has no family fallback"
    for platform in platforms.matrix()["platforms"]:
        data = yaml.safe_load((ROLES / "nvidia_driver" / "vars" / f"{platform}.yml").read_text())
        assert data["__nvidia_driver_repo_distro"] == platform.lower().replace("-", "").replace(
            ".", ""
        )


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


def preflight(*extra: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook("setup.yml", "--tags", "preflight", *extra, timeout=300)


def free_line(output: str) -> float:
    found = re.search(r"([\d.]+) GiB free on /", output)
    assert found, output[-2000:]
    return float(found.group(1))


@pytest.mark.slow
def test_preflight_measures_free_space_when_facts_lack_the_mount() -> None:
    """As in a chroot: no / among the mount facts. Preflight asks df on the host instead."""
    before = shutil.disk_usage("/").free / 1024**3
    done = preflight("-e", json.dumps({"ansible_mounts": []}), "-e", "preflight_min_free_gb=0.1")
    assert done.returncode == 0, done.stdout[-3000:]
    after = shutil.disk_usage("/").free / 1024**3
    # Other work on the machine moves the figure a little between the three readings.
    assert min(before, after) - 3 < free_line(done.stdout) < max(before, after) + 3, "not 0.0"


@pytest.mark.slow
def test_free_space_limit_given_on_the_command_line() -> None:
    """-e key=value makes a string: the check casts it, and still refuses what is too little."""
    zero = preflight(
        "-e", "preflight_min_free_gb=0", "-e", '{"preflight_overrides": {"free_gb": 0.0}}'
    )
    assert zero.returncode == 0, zero.stdout[-3000:]
    refused = preflight(
        "-e", "preflight_min_free_gb=20", "-e", '{"preflight_overrides": {"free_gb": 3.5}}'
    )
    assert refused.returncode != 0
    flat = " ".join(refused.stdout.split())
    assert (
        "/ has 3.5 GiB free and setup needs 20: free some space or lower preflight_min_free_gb"
        in flat
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variables", "refused"),
    [
        ({}, True),  # open kernel modules need Turing
        ({"nvidia_driver_open_modules": False}, False),
        (
            {
                "nvidia_driver_open_modules": False,
                "cuda_install_toolkit": True,
                "cuda_version": "13.0",
            },
            True,
        ),
    ],
)
def test_a_gpu_older_than_the_chosen_stack_is_named(
    variables: dict[str, Any], refused: bool
) -> None:
    old = [
        {"pci_id": "1eb8", "name": "Tesla T4"},
        {"pci_id": "1db1", "name": "Tesla V100-SXM2-16GB"},
    ]
    overrides = GPU_HOST | {"distribution": "Ubuntu", "version": "24.04", "gpu_devices": old}
    done = preflight("--check", "-e", json.dumps({"preflight_overrides": overrides, **variables}))
    flat = " ".join(done.stdout.split())
    if not refused:
        assert done.returncode == 0, flat[-2000:]
        return
    assert done.returncode != 0
    assert "Tesla V100-SXM2-16GB is older than Turing" in flat and "Tesla T4" not in flat
    expected = "CUDA 13.0" if variables.get("cuda_version") else "NVIDIA's open kernel modules"
    assert f"{expected} support Turing (sm_75, e.g. a T4) and newer" in flat
