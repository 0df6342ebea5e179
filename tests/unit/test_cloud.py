"""dlcloud's logic against moto in-process: launch, relaunch, spot, TTL, list, terminate, reap."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from cloud import ami, fleet, guard, inventory, prices
from cloud.aws import Aws, CloudError
from cloud.catalog import Catalog
from cloud.cli import main
from cloud.launcher import Launcher, LaunchRequest
from tests.fakes.aws import FAKE_CREDENTIALS, answer, fail

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
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


@pytest.fixture
def image_id(aws: Aws) -> str:
    return str(aws.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def launcher(aws: Aws, tmp_path: Path, now: datetime = NOW) -> Launcher:
    return Launcher(aws, Catalog.load(), now=lambda: now, key_folder=tmp_path / "keys")


def request(image_id: str, **changes: Any) -> LaunchRequest:
    values: dict[str, Any] = {
        "instance_type": "g5.xlarge",
        "name": "lab",
        "ami_id": image_id,
        "ssh_cidr": CIDR,
    }
    return LaunchRequest(**{**values, **changes})


def launch(aws: Aws, tmp_path: Path, image_id: str, **changes: Any) -> dict[str, Any]:
    chosen = launcher(aws, tmp_path)
    return chosen.launch(chosen.preflight(request(image_id, **changes)))


def test_launch_is_safe_by_default(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id, ttl_text="2h")
    ec2 = aws.client("ec2")
    assert instance["State"]["Name"] == "running"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    tags = guard.tags_of(instance)
    assert tags["Project"] == "dlstation" and tags["Name"] == "lab"
    assert tags[guard.TAG_EXPIRES] == "2026-11-26T14:00:00+00:00"
    assert tags[guard.TAG_OWNER].startswith("arn:aws:")
    shutdown = ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert "OnCalendar=2026-11-26 14:00:00 UTC" in script
    assert "shutdown -h" in script
    volume = ec2.describe_volumes()["Volumes"][0]
    assert (volume["VolumeType"], volume["Encrypted"]) == ("gp3", True)
    assert guard.tags_of(volume)["Project"] == "dlstation"
    group = ec2.describe_security_groups(GroupIds=[instance["SecurityGroups"][0]["GroupId"]])
    ranges = [
        r["CidrIp"] for p in group["SecurityGroups"][0]["IpPermissions"] for r in p["IpRanges"]
    ]
    assert ranges == [CIDR]
    key_file = tmp_path / "keys" / "dlstation-us-east-1.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ec2.describe_key_pairs()["KeyPairs"][0]["KeyType"] == "ed25519"


def test_spot_launch_uses_the_spot_market(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id, spot=True)
    assert instance.get("InstanceLifecycle") == "spot"


def test_same_name_is_found_not_relaunched(aws: Aws, tmp_path: Path, image_id: str, capsys) -> None:
    first = launch(aws, tmp_path, image_id)
    code = main(launch_argv(image_id, "--name", "lab", "--yes"))
    assert code == 0
    assert f"'lab' already exists ({first['InstanceId']}" in capsys.readouterr().out
    assert len(fleet.project_instances(aws.client("ec2"), ["running"])) == 1


def test_capacity_error_moves_to_the_next_zone(aws: Aws, tmp_path: Path, image_id: str) -> None:
    chosen = launcher(aws, tmp_path)
    plan = chosen.preflight(request(image_id))
    ec2 = aws.client("ec2")
    first_zone_subnet = chosen.default_subnets(guard.default_vpc(ec2))[plan.zones[0]]
    calls = fail(
        ec2,
        "RunInstances",
        "InsufficientInstanceCapacity",
        when=lambda p: p.get("SubnetId") == first_zone_subnet,
    )
    instance = chosen.launch(plan)
    assert len(calls) == 2
    assert instance["Placement"]["AvailabilityZone"] == plan.zones[1]


def test_no_capacity_anywhere_is_a_clear_error(aws: Aws, tmp_path: Path, image_id: str) -> None:
    chosen = launcher(aws, tmp_path)
    plan = chosen.preflight(request(image_id))
    fail(aws.client("ec2"), "RunInstances", "InsufficientInstanceCapacity")
    with pytest.raises(CloudError, match=r"no capacity for g5\.xlarge in any zone"):
        chosen.launch(plan)
    assert fleet.project_instances(aws.client("ec2"), ["running", "pending"]) == []


def test_ctrl_c_while_waiting_terminates_the_instance(
    aws: Aws, tmp_path: Path, image_id: str, monkeypatch
) -> None:
    chosen = launcher(aws, tmp_path)
    plan = chosen.preflight(request(image_id))

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    ec2 = aws.client("ec2")
    ec2.meta.events.register("before-call.ec2.DescribeInstanceStatus", interrupted)
    ec2.meta.events.register("before-call.ec2.DescribeInstances", interrupted)
    with pytest.raises(KeyboardInterrupt):
        chosen.launch(plan)
    ec2.meta.events.unregister("before-call.ec2.DescribeInstances", interrupted)
    states = {i["State"]["Name"] for i in fleet.project_instances(ec2)}
    assert states <= {"shutting-down", "terminated"}


def test_quota_too_small_refuses_before_launch(aws: Aws, tmp_path: Path, image_id: str) -> None:
    answer(aws.client("service-quotas"), "GetServiceQuota", {"Quota": {"Value": 0.0}})
    with pytest.raises(
        CloudError, match=r"needs 4 vCPUs but your on-demand G-instance quota \(L-DB2E81BA\) is 0"
    ):
        launcher(aws, tmp_path).preflight(request(image_id))
    assert fleet.project_instances(aws.client("ec2")) == []


def test_quota_counts_running_instances(aws: Aws, tmp_path: Path, image_id: str) -> None:
    launch(aws, tmp_path, image_id, name="first")
    answer(aws.client("service-quotas"), "GetServiceQuota", {"Quota": {"Value": 8.0}})
    plan = launcher(aws, tmp_path).preflight(request(image_id, name="second"))
    assert plan.quota.startswith("8 vCPUs (L-DB2E81BA)")
    # A fresh session, so the smaller answer is the one its client gets.
    fresh = Aws("us-east-1")
    answer(fresh.client("service-quotas"), "GetServiceQuota", {"Quota": {"Value": 6.0}})
    with pytest.raises(CloudError, match="is 6 with 4 in use"):
        launcher(fresh, tmp_path).preflight(request(image_id, name="second"))


def test_unreadable_quota_is_a_warning(aws: Aws, tmp_path: Path, image_id: str) -> None:
    plan = launcher(aws, tmp_path).preflight(request(image_id))
    assert plan.quota == "unknown"
    assert any("could not read the on-demand G vCPU quota" in w for w in plan.warnings)


def test_unknown_type_and_unoffered_type(aws: Aws, tmp_path: Path, image_id: str) -> None:
    with pytest.raises(CloudError, match="not a GPU instance type in dlstation's catalog"):
        launcher(aws, tmp_path).preflight(request(image_id, instance_type="t3.micro"))
    answer(aws.client("ec2"), "DescribeInstanceTypeOfferings", {"InstanceTypeOfferings": []})
    with pytest.raises(CloudError, match=r"g5\.xlarge is not offered in us-east-1"):
        launcher(aws, tmp_path).preflight(request(image_id))


def test_plan_states_cost_for_the_ttl(aws: Aws, tmp_path: Path, image_id: str) -> None:
    plan = launcher(aws, tmp_path).preflight(request(image_id, ttl_text="3h"))
    assert plan.price.usd_per_hour == 1.006
    assert plan.cost_for_ttl() == pytest.approx(3.018)
    text = "\n".join(plan.lines())
    assert "$1.0060/h" in text and "$3.02 at most" in text


def test_ami_from_ssm_then_fallback_then_error(aws: Aws) -> None:
    ssm, ec2 = aws.client("ssm"), aws.client("ec2")
    with pytest.raises(CloudError, match="pass --ami-id"):
        ami.resolve(ssm, ec2, ami.DEFAULT_AMI_TYPE)
    answer(ssm, "GetParameter", {"Parameter": {"Value": "ami-0123456789abcdef0"}})
    found, source = ami.resolve(ssm, ec2, ami.DEFAULT_AMI_TYPE)
    assert found == "ami-0123456789abcdef0"
    parameter = f"/aws/service/deeplearning/ami/x86_64/{ami.DEFAULT_AMI_TYPE}"
    assert source == f"SSM {parameter}/latest/ami-id"


def test_ami_fallback_takes_the_newest_image(aws: Aws) -> None:
    ec2 = aws.client("ec2")
    images = [
        {
            "ImageId": "ami-old",
            "Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20260101",
            "CreationDate": "2026-01-01T00:00:00.000Z",
        },
        {
            "ImageId": "ami-new",
            "Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20261101",
            "CreationDate": "2026-11-01T00:00:00.000Z",
        },
    ]
    answer(ec2, "DescribeImages", {"Images": images})
    assert ami.resolve(aws.client("ssm"), ec2, ami.DEFAULT_AMI_TYPE)[0] == "ami-new"


def test_list_shows_ttl_and_cost_so_far(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id, ttl_text="4h")
    later = instance["LaunchTime"] + timedelta(hours=1)
    row = fleet.describe(instance, "us-east-1", Catalog.load(), later)
    assert row["age_h"] == pytest.approx(1.0)
    assert row["cost_usd"] == pytest.approx(1.006)
    expires = datetime.fromisoformat(guard.tags_of(instance)[guard.TAG_EXPIRES])
    assert row["left_h"] == pytest.approx((expires - later).total_seconds() / 3600)


def test_terminate_cleans_group_and_key_when_unused(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    ec2 = aws.client("ec2")
    first = launch(aws, tmp_path, image_id, name="one")
    second = launch(aws, tmp_path, image_id, name="two")
    done = fleet.terminate(ec2, [first], tmp_path / "keys")
    assert done.instances == [first["InstanceId"]]
    assert done.security_groups == [] and done.key_pairs == [], "still used by 'two'"
    done = fleet.terminate(ec2, [second], tmp_path / "keys")
    assert done.security_groups == [second["SecurityGroups"][0]["GroupId"]]
    assert done.key_pairs == ["dlstation-us-east-1"]
    assert not (tmp_path / "keys" / "dlstation-us-east-1.pem").exists()
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_reap_finds_expired_instances_and_orphans(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    expired = launch(aws, tmp_path, image_id, name="old", ttl_text="1h")
    ec2.create_volume(
        AvailabilityZone="us-east-1a",
        Size=10,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "Project", "Value": "dlstation"}]}
        ],
    )
    ec2.create_volume(AvailabilityZone="us-east-1a", Size=10)  # not ours: left alone
    plan = fleet.find_leftovers(ec2, NOW + timedelta(hours=2))
    assert [i["InstanceId"] for i in plan.expired] == [expired["InstanceId"]]
    assert len(plan.volumes) == 1
    assert plan.security_groups == {expired["SecurityGroups"][0]["GroupId"]}
    done = fleet.reap(ec2, plan, tmp_path / "keys")
    assert done.instances == [expired["InstanceId"]]
    assert len(done.volumes) == 1
    remaining = ec2.describe_volumes()["Volumes"]
    assert not any(
        guard.tags_of(v).get("Project") == "dlstation" and v["State"] == "available"
        for v in remaining
    )
    assert fleet.find_leftovers(ec2, NOW + timedelta(hours=2)).empty()


def test_reap_leaves_live_instances_alone(aws: Aws, tmp_path: Path, image_id: str) -> None:
    launch(aws, tmp_path, image_id, ttl_text="8h")
    assert fleet.find_leftovers(aws.client("ec2"), NOW + timedelta(hours=2)).empty()


def test_inventory_add_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    instance = {"InstanceId": "i-1", "InstanceType": "g5.xlarge", "PublicIpAddress": "198.51.100.4"}
    inventory.add_host(path, "lab", instance, "us-east-1", tmp_path / "k.pem")
    hosts = inventory.read(path)
    assert hosts["lab"]["ansible_host"] == "198.51.100.4"
    assert hosts["lab"]["ansible_user"] == "ubuntu"
    assert inventory.remove_hosts(path, {"i-1"}) == ["lab"]
    assert inventory.read(path) == {}


@pytest.mark.parametrize(("text", "hours"), [("90m", 1.5), ("4h", 4), ("1.5d", 36)])
def test_ttl_parsing(text: str, hours: float) -> None:
    assert guard.parse_ttl(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["0h", "5m", "8d", "forever", "4"])
def test_bad_ttl_is_refused(text: str) -> None:
    with pytest.raises(CloudError):
        guard.parse_ttl(text)


def test_ssh_cidr_rules() -> None:
    assert guard.caller_cidr(lambda: "198.51.100.9") == "198.51.100.9/32"
    with pytest.raises(CloudError, match="pass --ssh-cidr"):
        guard.caller_cidr(lambda: "not an address")
    with pytest.raises(CloudError, match="whole internet"):
        guard.check_cidr("0.0.0.0/0")


def test_key_pair_without_private_key_is_refused(aws: Aws, tmp_path: Path) -> None:
    aws.client("ec2").create_key_pair(KeyName="theirs", KeyType="ed25519")
    labels = guard.Labels("x", "me", NOW, "4h")
    with pytest.raises(CloudError, match="private key is not at"):
        guard.ensure_key_pair(aws.client("ec2"), "theirs", labels, tmp_path / "keys")


def test_aws_errors_become_advice(aws: Aws, tmp_path: Path, image_id: str, capsys) -> None:
    fail(aws.client("ec2"), "RunInstances", "VcpuLimitExceeded")
    chosen = launcher(aws, tmp_path)
    with pytest.raises(CloudError) as caught:
        chosen.launch(chosen.preflight(request(image_id)))
    message = str(caught.value)
    assert "VcpuLimitExceeded" in message
    assert "request an increase" in message
    assert "testing" not in message, "credentials never appear in messages"


def launch_argv(image_id: str, *extra: str) -> list[str]:
    """`dlcloud launch` of a g5.xlarge from a moto image, SSH from the test address."""
    return [
        "--region",
        "us-east-1",
        "launch",
        "--instance-type",
        "g5.xlarge",
        "--ami-id",
        image_id,
        "--ssh-cidr",
        CIDR,
        *extra,
    ]


def test_launch_without_yes_and_without_a_terminal_launches_nothing(
    aws: Aws, image_id: str, capsys
) -> None:
    code = main(
        launch_argv(image_id),
        confirm=lambda prompt: False,
    )
    assert code == 1
    assert "not launched (pass --yes" in capsys.readouterr().out
    assert fleet.project_instances(aws.client("ec2")) == []


def test_dry_run_launches_nothing(aws: Aws, image_id: str, capsys) -> None:
    code = main(launch_argv(image_id, "--dry-run"))
    assert code == 0
    out = capsys.readouterr().out
    assert "launch plan for 'dlstation-g5-xlarge' in us-east-1" in out
    assert "dry run: every check passed" in out
    assert fleet.project_instances(aws.client("ec2")) == []


def test_no_credentials_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = main(
        [
            "--region",
            "us-east-1",
            "launch",
            "--instance-type",
            "g5.xlarge",
            "--ssh-cidr",
            CIDR,
            "--yes",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no AWS credentials found" in err and "Traceback" not in err


def test_offers_lists_gpus_with_catalog_date(capsys) -> None:
    assert main(["--region", "us-east-1", "offers", "--gpu", "A10G"]) == 0
    out = capsys.readouterr().out
    assert "g5.xlarge" in out and "1x NVIDIA A10G" in out and "1.006" in out
    assert "g4dn" not in out
    assert "catalog of 2026-11-26" in out


def pricing_product(usd: str) -> str:
    term = {"priceDimensions": {"d": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}
    return json.dumps({"product": {"sku": "X"}, "terms": {"OnDemand": {"t": term}}})


def test_price_refresh_reads_pricing_api_and_spot_history(aws: Aws) -> None:
    answer(aws.client("pricing"), "GetProducts", {"PriceList": [pricing_product("1.5")]})
    history = [
        {
            "InstanceType": "g5.xlarge",
            "SpotPrice": value,
            "AvailabilityZone": "us-east-1a",
            "ProductDescription": "Linux/UNIX",
            "Timestamp": NOW,
        }
        for value in ("0.30", "0.50", "0.40")
    ]
    answer(aws.client("ec2"), "DescribeSpotPriceHistory", {"SpotPriceHistory": history})
    lines: list[str] = []
    data = prices.refresh(Catalog.packaged(), lambda region: aws, ["eu-west-1"], NOW, lines.append)
    refreshed = Catalog(data)
    assert refreshed.on_demand("g5.xlarge", "eu-west-1").usd_per_hour == 1.5
    assert refreshed.on_demand("g5.xlarge", "us-east-1").usd_per_hour == 1.006, "kept"
    spot = refreshed.spot("g5.xlarge", "eu-west-1")
    assert (spot.usd_per_hour, spot.estimate) == (0.4, False)
    assert data["as_of"] == "2026-11-26"
    assert lines == ["eu-west-1: 33 on-demand prices, 1 spot medians"]


def test_price_refresh_without_pricing_api_keeps_old_prices(aws: Aws) -> None:
    fail(aws.client("pricing"), "GetProducts", "AccessDeniedException")
    lines: list[str] = []
    data = prices.refresh(Catalog.packaged(), lambda region: aws, ["us-east-1"], NOW, lines.append)
    assert Catalog(data).on_demand("g5.xlarge", "us-east-1").usd_per_hour == 1.006
    assert any("Pricing API for us-east-1 failed: AccessDeniedException" in line for line in lines)


def test_spot_estimate_is_labelled() -> None:
    spot = Catalog.packaged().spot("g5.xlarge", "us-east-1")
    assert spot.estimate and spot.usd_per_hour == pytest.approx(0.4024)
    assert "estimate" in spot.basis


def test_no_region_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert (
        "no AWS region; pass --region or set AWS_DEFAULT_REGION" in err and "Traceback" not in err
    )
