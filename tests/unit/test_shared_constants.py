"""Facts that Python and Ansible both need: each copy agrees with its one source."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bench.facts import platforms
from bench.training.backends import BACKENDS
from cloud import ami, aws, guard, launcher
from tests.conftest import REPO
from tests.fakes.idle import watchdog_module

ROLES = REPO / "playbooks" / "roles"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def aws_ec2() -> dict[str, Any]:
    inventory: dict[str, Any] = load(REPO / "inventory" / "aws_ec2.yml")
    return inventory


def render(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate an inventory `compose` expression as the aws_ec2 plugin does."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar, trust_as_template

    init_plugin_loader()  # once per process is enough; a second call only warns
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.evaluate_expression(trust_as_template(expression))


def test_backends_are_the_version_tables_and_verifys() -> None:
    matrix = platforms.matrix()
    for build in platforms.BUILDS:
        assert tuple(matrix["builds"][build]) == BACKENDS, build
    for python, row in matrix["pythons"].items():
        # A backend a Python has no release for is named, with why, instead of pinned.
        left_out = set(matrix["unavailable"].get(python, {}))
        assert set(row) | left_out == {"keras", *BACKENDS}, python
        assert not set(row) & left_out, python
    probes = load(ROLES / "verify" / "vars" / "main.yml")["__verify_device_probe"]
    assert set(probes) == set(BACKENDS)


def test_cuda_versions_are_the_cuda_roles_packages() -> None:
    defaults = load(ROLES / "cuda" / "defaults" / "main.yml")
    spec = load(ROLES / "cuda" / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    assert spec["options"]["cuda_version"]["choices"] == list(defaults["cuda_packages"])
    assert defaults["cuda_version"] in defaults["cuda_packages"]


def test_ssh_user_is_dlclouds() -> None:
    assert render(aws_ec2()["compose"]["ansible_user"], {}) == launcher.SSH_USER
    assert load(REPO / "inventory" / "group_vars" / "dlami.yml")["ansible_user"] == (
        launcher.SSH_USER
    )


@pytest.mark.parametrize("key_dir", [None, "/tmp/elsewhere"])
def test_inventory_key_file_is_where_dlcloud_saves_keys(
    key_dir: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if key_dir is None:
        monkeypatch.delenv("DLCLOUD_KEY_DIR", raising=False)
    else:
        monkeypatch.setenv("DLCLOUD_KEY_DIR", key_dir)
    expression = aws_ec2()["compose"]["ansible_ssh_private_key_file"]
    rendered = Path(render(expression, {"key_name": "dlstation-us-east-1"})).expanduser()
    assert rendered == guard.key_dir() / "dlstation-us-east-1.pem"


def test_inventory_groups_by_dlclouds_ami_type_tag() -> None:
    assert aws_ec2()["groups"]["dlami"] == f"'{guard.TAG_AMI_TYPE}' in tags"
    assert aws_ec2()["filters"][f"tag:{guard.TAG_CREATED_BY}"] == guard.CREATED_BY


def test_inventory_lists_the_hosts_dlcloud_calls_ready() -> None:
    assert aws_ec2()["filters"]["instance-state-name"] == aws.RUNNING
    assert aws.RUNNING in aws.UP_STATES


def watchdog_config() -> Any:
    """The idle watchdog's defaults: it runs on the instance alone, so it keeps its own copies."""
    return watchdog_module().Config(period=60)


def jupyter_token_file() -> str:
    """Where the jupyter role writes the token, rendered with keras_env's default root."""
    tasks = (ROLES / "jupyter" / "tasks" / "main.yml").read_text()
    template = "{{ keras_env_root }}/jupyter/token.env"
    assert f'creates: "{template}"' in tasks
    root = load(ROLES / "keras_env" / "defaults" / "main.yml")["keras_env_root"]
    return template.replace("{{ keras_env_root }}", root)


def test_jupyter_port_is_the_jupyter_roles() -> None:
    port = load(ROLES / "jupyter" / "defaults" / "main.yml")["jupyter_port"]
    assert port == launcher.JUPYTER_PORT
    assert urlsplit(watchdog_config().jupyter_url).port == port


def test_jupyter_token_file_is_where_the_jupyter_role_writes_it() -> None:
    token = jupyter_token_file()
    assert str(watchdog_config().jupyter_token_file) == token
    boot = guard.idle_watchdog_units(timedelta(minutes=30))
    assert f"DLSTATION_JUPYTER_TOKEN_FILE={token}\n" in boot


def test_dlstation_folders_come_from_keras_env_alone() -> None:
    """/opt/dlstation is written once, in keras_env's defaults; every other copy is compared.

    The roles read keras_env_root; the instance-side code (the idle watchdog and the boot script
    that installs it) cannot, so its copies are checked against the role above.
    """
    defaults = load(ROLES / "keras_env" / "defaults" / "main.yml")
    assert defaults["keras_env_root"] == "/opt/dlstation"
    folders = [REPO / "playbooks", REPO / "inventory", REPO / "bench", REPO / "cloud"]
    holders = [
        path.relative_to(REPO)
        for pattern in ("*.yml", "*.j2", "*.py", "*.sh", "*.json")
        for path in [*REPO.glob(pattern), *(p for f in folders for p in f.rglob(pattern))]
        if "/opt/dlstation" in path.read_text()
    ]
    assert sorted(map(str, holders)) == [
        "cloud/data/idle_watchdog.py",  # the token test below
        "cloud/guard.py",  # the same test
        "playbooks/roles/keras_env/defaults/main.yml",
        "playbooks/roles/keras_env/meta/argument_specs.yml",
    ]


def test_role_that_reads_another_declares_it() -> None:
    """A role using preflight_facts or keras_env_* lists that role in meta/main.yml.

    preflight is the exception: it checks the other roles' settings before any of them runs.
    """
    providers = {"preflight": "preflight_facts", "keras_env": "keras_env_"}
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir() and p.name != "preflight"):
        text = "".join(p.read_text() for p in (role / "tasks").glob("*.yml"))
        text += "".join(p.read_text() for p in (role / "templates").glob("*"))
        declared = {dep["role"] for dep in load(role / "meta" / "main.yml")["dependencies"]}
        for provider, prefix in providers.items():
            if role.name == provider or prefix not in text:
                continue
            chain = declared | {
                d["role"]
                for name in declared
                for d in load(ROLES / name / "meta" / "main.yml")["dependencies"]
            }
            assert provider in chain, f"{role.name} reads {prefix}* without depending on {provider}"


def test_default_ami_type_is_in_the_version_table() -> None:
    assert platforms.for_ami_type(ami.DEFAULT_AMI_TYPE) is not None
    assert set(ami.NAME_PATTERNS) == {
        facts["ami_type"] for facts in platforms.matrix()["platforms"].values() if facts["ami_type"]
    }
