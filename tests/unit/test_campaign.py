"""`dlcloud bench` against moto in-process, ansible-playbook replaced at its seam."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from bench.facts.catalog import Catalog
from cloud import campaign, campaign_options, fleet, guard, inventory
from cloud.aws import Aws, CloudError
from cloud.cli import build_parser
from cloud.options import MachineOptions
from tests.fakes.aws import FAKE_CREDENTIALS, answer, fail

CIDR = "203.0.113.7/32"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("DLCLOUD_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("DLCLOUD_INVENTORY", str(tmp_path / "dlcloud.yml"))
    with mock_aws():
        yield Aws("us-east-1")


class FakePlaybooks:
    """Stands in for ansible-playbook: emits jsonl events and writes the result files bench.yml
    would fetch; the report command just succeeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path, on_line: Any = None
    ) -> int:
        self.calls.append(argv)
        if "--limit" not in argv:
            return 0  # dlbench report
        hosts = argv[argv.index("--limit") + 1].split(",")
        # Every host ansible is limited to is in the inventory: no launch lost another's entry.
        assert set(hosts) <= set(inventory.read(inventory.default_path()))
        variables = json.loads(argv[argv.index("-e") + 1])
        task = (
            "Run dlbench verify"
            if argv[argv.index("--limit") + 2].endswith("setup.yml")
            else "Run dlbench"
        )
        on_line(json.dumps({"_event": "v2_playbook_on_task_start", "task": {"name": task}}))
        for host in hosts:
            result = {"stdout": "verdict: PASS", "rc": 0}
            on_line(
                json.dumps(
                    {"_event": "v2_runner_on_ok", "task": {"name": task}, "hosts": {host: result}}
                )
            )
            if task == "Run dlbench":
                # Every value dlcloud hands Ansible is marked unsafe: data, never a template.
                folder = Path(variables["bench_fetch_dir"]["__ansible_unsafe"])
                folder.mkdir(parents=True, exist_ok=True)
                document = {"status": "complete", "runs": [{"status": "complete"}]}
                (folder / f"{host}.json").write_text(json.dumps(document))
        return 0


def make(
    aws: Aws,
    tmp_path: Path,
    run: FakePlaybooks,
    types: list[str],
    said: list[str] | None = None,
) -> campaign.Campaign:
    image = aws.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    options = campaign_options.Options(
        types=types,
        name="unit",
        folder=tmp_path / "unit",
        machine=MachineOptions(ttl_text="2h", ami_id=image, ssh_cidr=CIDR),
        yes=True,
    )
    ssh_probes: list[str] = []

    def ssh_ready(address: str, stopping: threading.Event) -> None:
        ssh_probes.append(address)

    return campaign.Campaign(
        options,
        aws,
        Catalog.load(),
        now=lambda: datetime.now(timezone.utc),
        confirm=lambda _: False,
        run=run,
        ssh_ready=ssh_ready,
        say=(said if said is not None else []).append,
    )


def options(*argv: str) -> campaign_options.Options:
    args = build_parser().parse_args(["bench", *argv])
    return campaign_options.options_from(args, datetime(2026, 11, 27, tzinfo=timezone.utc))


def test_hosts_are_host_name_labels_and_long_names_are_refused() -> None:
    chosen = options("--types", "g5.xlarge,p4de.24xlarge", "--name", "L4-vs-A10G")
    assert chosen.host("g5.xlarge") == "L4-vs-A10G-g5-xlarge"
    assert guard.check_name(chosen.host("p4de.24xlarge")) == "L4-vs-A10G-p4de-24xlarge"
    assert options("--types", "g5.xlarge").name == "bench-20261127-000000"
    with pytest.raises(CloudError, match="letters, digits and hyphens"):
        options("--types", "g5.xlarge", "--name", "l4_vs_a10g")
    # 49 + len("-p4de-24xlarge") = 63 fits; one more does not.
    assert options("--types", "p4de.24xlarge", "--name", "x" * 49).name == "x" * 49
    with pytest.raises(CloudError, match="64 characters, over 63; use a --name of at most 49"):
        options("--types", "g5.xlarge,p4de.24xlarge", "--name", "x" * 50)
    with pytest.raises(CloudError, match="--idle-stop"):
        options("--types", "g5.xlarge", "--idle-stop", "1m")


def test_types_of_one_family_share_its_quota(aws: Aws, tmp_path: Path) -> None:
    # 6 vCPUs hold a g5.xlarge or a g6.xlarge (4 each), not both at once.
    answer(aws.client("service-quotas"), "GetServiceQuota", {"Quota": {"Value": 6.0}})
    run = FakePlaybooks()
    with pytest.raises(
        CloudError, match=r"needs 8 on-demand G-family vCPUs .* quota L-DB2E81BA is 6"
    ):
        make(aws, tmp_path, run, ["g5.xlarge", "g6.xlarge"]).execute()
    assert fleet.project_instances(aws.client("ec2")) == []
    assert run.calls == []


def test_no_capacity_for_one_type_is_its_reason(aws: Aws, tmp_path: Path) -> None:
    fail(
        aws.client("ec2"),
        "RunInstances",
        "InsufficientInstanceCapacity",
        when=lambda p: p["InstanceType"] == "g6.xlarge" and not p.get("DryRun"),
    )
    run = FakePlaybooks()
    said: list[str] = []
    chosen = make(aws, tmp_path, run, ["g5.xlarge", "g6.xlarge"], said)
    assert chosen.execute() == 1
    # Each instance's bill comes once, after the campaign's cost, at the price tagged at launch.
    bills = [line for line in said if "cost: unit-" in line]
    assert len(bills) == 1
    assert re.fullmatch(
        r"  cost: unit-g5-xlarge \(i-\w+\): ran 0h00m, \$0\.00 at \$\d+\.\d{4}/h \(on-demand, .*\)",
        bills[0],
    )
    assert said.index(bills[0]) > next(
        i for i, s in enumerate(said) if s.startswith("campaign cost")
    )
    (instance,) = fleet.project_instances(aws.client("ec2"))
    assert guard.tags_of(instance)[guard.TAG_IDLE] == "30m", "--idle-stop reaches the instance"
    summary = json.loads((tmp_path / "unit" / "campaign.json").read_text())
    rows = {row["instance_type"]: row for row in summary["types"]}
    assert rows["g5.xlarge"]["status"] == "done" and rows["g5.xlarge"]["verdict"] == "PASS"
    assert rows["g6.xlarge"]["status"] == "failed"
    assert rows["g6.xlarge"]["reason"].startswith("launch: no capacity for g6.xlarge")
    assert rows["g6.xlarge"]["instance_hours"] == 0
    # Ansible ran on the one host that came up, and only on it.
    limits = [argv[argv.index("--limit") + 1] for argv in run.calls if "--limit" in argv]
    assert limits == ["unit-g5-xlarge", "unit-g5-xlarge"]
    live = fleet.project_instances(aws.client("ec2"), ["pending", "running", "stopped"])
    assert live == []
    assert inventory.read(inventory.default_path()) == {}


def test_every_type_launches_at_once_and_reaches_ansible(aws: Aws, tmp_path: Path) -> None:
    run = FakePlaybooks()
    types = ["g4dn.xlarge", "g5.xlarge", "g6.xlarge", "g6e.xlarge"]
    assert make(aws, tmp_path, run, types).execute() == 0
    limits = [argv[argv.index("--limit") + 1] for argv in run.calls if "--limit" in argv]
    assert limits == [",".join(f"unit-{t.replace('.', '-')}" for t in types)] * 2
    state = json.loads((tmp_path / "unit" / "state.json").read_text())
    assert all(len(host["instances"]) == 1 for host in state["hosts"])
    assert fleet.project_instances(aws.client("ec2"), ["pending", "running"]) == []


def test_resume_launches_only_what_is_missing(aws: Aws, tmp_path: Path) -> None:
    run = FakePlaybooks()
    assert make(aws, tmp_path, run, ["g5.xlarge"]).execute() == 0
    launched = len(fleet.project_instances(aws.client("ec2")))
    again = FakePlaybooks()
    assert make(aws, tmp_path, again, ["g5.xlarge", "g6.xlarge"]).execute() == 0
    limits = [argv[argv.index("--limit") + 1] for argv in again.calls if "--limit" in argv]
    assert limits == ["unit-g6-xlarge", "unit-g6-xlarge"]
    assert len(fleet.project_instances(aws.client("ec2"))) == launched + 1
    state = json.loads((tmp_path / "unit" / "campaign.json").read_text())
    assert [row["status"] for row in state["types"]] == ["reused", "done"]


def test_teardown_leaves_an_instance_of_the_same_name_it_did_not_start(
    aws: Aws, tmp_path: Path
) -> None:
    chosen = make(aws, tmp_path, FakePlaybooks(), ["g5.xlarge"])
    ec2 = aws.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = guard.tag_list(
        {
            guard.TAG_CREATED_BY: guard.CREATED_BY,
            guard.TAG_OWNER: aws.caller(),
            guard.TAG_NAME: "unit-g5-xlarge",
        }
    )
    by_hand = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    chosen.teardown()
    (found,) = ec2.describe_instances(InstanceIds=[by_hand])["Reservations"][0]["Instances"]
    assert found["State"]["Name"] == "running"
