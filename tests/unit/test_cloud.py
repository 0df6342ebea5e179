"""dlcloud's logic against moto in-process: launch, relaunch, spot, TTL, list, terminate, reap."""

from __future__ import annotations

import base64
import json
import shlex
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.parsers import ResponseParserError
from moto import mock_aws

from bench import exitcodes
from bench.facts.catalog import Catalog
from cloud import ami, cli, fleet, guard, inventory, prices
from cloud import launcher as launcher_module
from cloud.aws import Aws, CloudError, aws_errors, explain
from cloud.cli import build_parser, main
from cloud.launcher import Launcher, LaunchRequest
from tests.fakes.aws import FAKE_CREDENTIALS, answer, fail

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
CIDR = "203.0.113.7/32"


def later() -> datetime:
    """A terminate once the grace period of what these launches set up is over."""
    return datetime.now(timezone.utc) + guard.GRACE + timedelta(minutes=1)


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


def scope(aws: Aws, tmp_path: Path) -> fleet.Scope:
    return fleet.Scope(aws.caller(), tmp_path / "keys", tmp_path / "dlcloud.yml")


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
    states = {i["State"]["Name"] for i in fleet.owned_instances(ec2, None)}
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
    disk = 100 * 0.08 / 730  # gp3 per GiB-month, a month being 730 hours
    assert plan.cost_for_ttl() == pytest.approx((1.006 + disk) * 3)
    text = "\n".join(plan.lines())
    assert "$1.0060/h" in text and "$3.05 at most (instance and disk)" in text


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
    done = fleet.terminate(ec2, [first], scope(aws, tmp_path), later())
    assert done.instances == [first["InstanceId"]]
    assert done.security_groups == [first["SecurityGroups"][0]["GroupId"]], "each launch its own"
    assert done.key_pairs == [], "still used by 'two'"
    done = fleet.terminate(ec2, [second], scope(aws, tmp_path), later())
    assert done.security_groups == [second["SecurityGroups"][0]["GroupId"]]
    assert done.key_pairs == ["dlstation-us-east-1"]
    assert not (tmp_path / "keys" / "dlstation-us-east-1.pem").exists()
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_a_name_with_no_live_instance_is_refused_with_what_to_do(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    """stop, start, ssh and terminate by name: a name nobody launched is bad input (exit 2, one
    line pointing at `dlcloud list`), never a crash; the right name finds the instance."""
    ec2 = aws.client("ec2")
    lab = launch(aws, tmp_path, image_id, name="lab")
    owner = guard.owner_of(lab)
    assert fleet.find_by_name(ec2, "lab", owner)["InstanceId"] == lab["InstanceId"]
    for who in (owner, None):
        with pytest.raises(CloudError) as refused:
            fleet.find_by_name(ec2, "lab2", who)
        assert refused.value.exit_code == exitcodes.USAGE
        assert str(refused.value) == "no live dlstation instance named 'lab2'; see `dlcloud list`"


def test_one_name_on_two_owners_instances_is_refused_without_an_owner(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    """--any-owner with a name two people used: which one is meant cannot be told, so neither
    is touched; each owner's own lookup finds their own."""
    ec2 = aws.client("ec2")
    mine = launch(aws, tmp_path, image_id, name="lab")
    tags = [
        {**tag, "Value": "arn:aws:iam::123456789012:user/someone-else"}
        if tag["Key"] == guard.TAG_OWNER
        else tag
        for tag in mine["Tags"]
    ]
    theirs = ec2.run_instances(
        ImageId=image_id,
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]
    with pytest.raises(CloudError) as refused:
        fleet.find_by_name(ec2, "lab", None)
    assert refused.value.exit_code == exitcodes.USAGE
    message = str(refused.value)
    assert message.startswith("2 live instances are named 'lab': "), message
    assert mine["InstanceId"] in message and theirs["InstanceId"] in message, message
    found = fleet.find_by_name(ec2, "lab", guard.owner_of(mine))
    assert found["InstanceId"] == mine["InstanceId"]


def test_reap_finds_expired_instances_and_orphans(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    expired = launch(aws, tmp_path, image_id, name="old", ttl_text="1h")
    tagged = ec2.create_volume(
        AvailabilityZone="us-east-1a",
        Size=10,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "Project", "Value": "dlstation"}]}
        ],
    )["VolumeId"]
    plain = ec2.create_volume(AvailabilityZone="us-east-1a", Size=10)["VolumeId"]
    before = {tagged, plain}
    plan = fleet.find_leftovers(ec2, NOW + timedelta(hours=2), aws.caller())
    assert [i["InstanceId"] for i in plan.expired] == [expired["InstanceId"]]
    assert plan.volumes == [], "a Project tag does not make a volume dlcloud's"
    assert plan.security_groups == {expired["SecurityGroups"][0]["GroupId"]}
    assert plan.key_pairs == {"dlstation-us-east-1"}, "its key, claimed hours ago, used by no other"
    done = fleet.reap(ec2, plan, scope(aws, tmp_path), later())
    assert done.instances == [expired["InstanceId"]]
    assert done.volumes == []
    assert before <= {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert fleet.find_leftovers(ec2, NOW + timedelta(hours=2), aws.caller()).empty()


class NoAws:
    """An EC2 client that must not be called."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"AWS was called: {name}")


def test_terminating_nothing_asks_aws_nothing(tmp_path: Path) -> None:
    """A reap with nothing expired: EC2 refuses TerminateInstances with no ids (moto accepts it,
    so only a client that must not be called shows the difference)."""
    nothing = fleet.terminate(NoAws(), [], fleet.Scope("me", tmp_path / "keys"))
    assert nothing == fleet.Cleanup()


def test_reap_leaves_live_instances_alone(aws: Aws, tmp_path: Path, image_id: str) -> None:
    launch(aws, tmp_path, image_id, ttl_text="8h")
    assert fleet.find_leftovers(aws.client("ec2"), NOW + timedelta(hours=2), aws.caller()).empty()


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
    assert "catalog of 2026-12-01" in out


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
    assert lines == ["eu-west-1: 39 on-demand prices, 1 spot medians"]


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


# -- ownership: dlcloud deletes only what it created ----------------------------------------


def user_key(aws: Aws, tmp_path: Path, name: str = "mykey") -> Path:
    """A key pair the user made themselves (no dlcloud tag), private key in the key folder."""
    material = aws.client("ec2").create_key_pair(KeyName=name, KeyType="ed25519")["KeyMaterial"]
    path = tmp_path / "keys" / f"{name}.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(material)
    return path


def test_users_key_pair_and_file_survive_terminate(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    key_file = user_key(aws, tmp_path)
    instance = launch(aws, tmp_path, image_id, key_name="mykey")
    done = fleet.terminate(ec2, [instance], scope(aws, tmp_path), later())
    assert done.key_pairs == [] and done.key_files == []
    assert any("key pair mykey" in kept and "did not create" in kept for kept in done.kept)
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["mykey"]
    assert key_file.is_file()
    assert done.security_groups, "the group dlcloud created is removed once unused"


def test_key_in_use_by_any_instance_is_kept(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    instance = launch(aws, tmp_path, image_id)
    # Someone launched a machine of their own with dlcloud's key, outside the project.
    ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        KeyName=instance["KeyName"],
        InstanceType="t3.micro",
    )
    done = fleet.terminate(ec2, [instance], scope(aws, tmp_path), later())
    assert done.key_pairs == []
    assert any("another instance uses it" in kept for kept in done.kept)
    assert (tmp_path / "keys" / "dlstation-us-east-1.pem").is_file()


def test_existing_file_without_key_pair_is_refused_and_untouched(aws: Aws, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "dlstation-us-east-1.pem"
    path.parent.mkdir(parents=True)
    path.write_text("someone's key\n")
    labels = guard.Labels("x", "me", NOW, "4h")
    with pytest.raises(CloudError, match="will not overwrite it"):
        guard.ensure_key_pair(aws.client("ec2"), "dlstation-us-east-1", labels, tmp_path / "keys")
    assert path.read_text() == "someone's key\n"
    assert aws.client("ec2").describe_key_pairs()["KeyPairs"] == []


def test_key_file_changed_since_dlcloud_wrote_it_is_kept(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    instance = launch(aws, tmp_path, image_id)
    path = tmp_path / "keys" / "dlstation-us-east-1.pem"
    path.write_text("the user put another key here\n")
    done = fleet.terminate(aws.client("ec2"), [instance], scope(aws, tmp_path), later())
    assert done.key_pairs == ["dlstation-us-east-1"] and done.key_files == []
    assert path.read_text() == "the user put another key here\n"


def test_created_resources_carry_the_creation_tag(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    launch(aws, tmp_path, image_id)
    (key,) = ec2.describe_key_pairs()["KeyPairs"]
    assert guard.created_by_dlcloud(key)
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [guard.ssh_group_name("lab", aws.caller())]}]
    )
    assert guard.created_by_dlcloud(groups["SecurityGroups"][0])


def test_users_group_of_the_same_name_is_not_changed(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    ec2 = aws.client("ec2")
    vpc = guard.default_vpc(ec2)
    ours = guard.ssh_group_name("lab", aws.caller())
    group = ec2.create_security_group(GroupName=ours, Description="mine", VpcId=vpc)
    chosen = launcher(aws, tmp_path)
    with pytest.raises(CloudError, match="dlcloud did not create"):
        chosen.preflight(request(image_id))
    assert ec2.describe_key_pairs()["KeyPairs"] == [], "refused before the key pair"
    (found,) = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"]
    assert found["IpPermissions"] == []


def test_reap_leaves_what_the_user_tagged_for_the_project(aws: Aws, tmp_path: Path) -> None:
    ec2 = aws.client("ec2")
    project = [{"Key": "Project", "Value": "dlstation"}]
    ec2.create_security_group(
        GroupName="users-own",
        Description="tagged by the user for the inventory",
        VpcId=guard.default_vpc(ec2),
        TagSpecifications=[{"ResourceType": "security-group", "Tags": project}],
    )
    ec2.create_key_pair(
        KeyName="users-key", TagSpecifications=[{"ResourceType": "key-pair", "Tags": project}]
    )
    assert fleet.find_leftovers(ec2, NOW, aws.caller()).empty()


# -- names, printed commands, options, regions ----------------------------------------------


@pytest.mark.parametrize("name", ["lab", "a", "gpu-box-2", "x" * 63])
def test_good_names(name: str) -> None:
    assert guard.check_name(name) == name


@pytest.mark.parametrize("name", ["bad name;rm -rf /", "-lead", "trail-", "x" * 64, "", "a_b"])
def test_bad_names_are_refused_with_a_valid_example(name: str) -> None:
    with pytest.raises(CloudError, match="for example --name ") as caught:
        guard.check_name(name)
    example = str(caught.value).rsplit("--name ", 1)[1]
    assert guard.check_name(example) == example


def test_hostile_name_is_refused_before_any_call(image_id: str, capsys) -> None:
    code = main(launch_argv(image_id, "--name", "bad name;rm -rf /", "--yes"))
    assert code == 2
    assert "for example --name bad-name-rm-rf" in capsys.readouterr().err


def test_printed_commands_are_quoted(tmp_path: Path) -> None:
    instance = {"PublicIpAddress": "198.51.100.4"}
    key = tmp_path / "my keys" / "k.pem"
    command = launcher_module.ssh_command(instance, key)
    assert shlex.split(command) == ["ssh", "-i", str(key), "ubuntu@198.51.100.4"]
    tunnel = launcher_module.tunnel_command(instance, key).split("  # ")[0]
    assert shlex.split(tunnel)[2] == str(key)


def test_launch_prints_quoted_commands(aws: Aws, image_id: str, capsys, tmp_path: Path) -> None:
    assert main(launch_argv(image_id, "--name", "lab", "--yes")) == 0
    out = capsys.readouterr().out
    terminate_line = next(line for line in out.splitlines() if "when done:" in line)
    assert shlex.split(terminate_line.split("when done: ")[1]) == [
        "dlcloud",
        "--region",
        "us-east-1",
        "terminate",
        "lab",
    ]
    ansible_line = next(line for line in out.splitlines() if "ansible:" in line)
    assert shlex.split(ansible_line.split("ansible: ")[1])[-2:] == ["--limit", "lab"]


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--region", "eu-west-1", "--profile", "p", "list"])
    after = parser.parse_args(["list", "--region", "eu-west-1", "--profile", "p"])
    neither = parser.parse_args(["list"])
    assert (before.region, before.profile) == (after.region, after.profile) == ("eu-west-1", "p")
    assert (neither.region, neither.profile) == (None, None)
    mixed = parser.parse_args(["--region", "eu-west-1", "terminate", "lab", "--yes"])
    assert mixed.region == "eu-west-1"


def test_unknown_region_is_refused_offline(capsys) -> None:
    assert main(["--region", "mars-east-9", "list"]) == 2
    err = capsys.readouterr().err
    assert "unknown AWS region 'mars-east-9'" in err and "us-east-1" in err
    with pytest.raises(CloudError):
        Aws("mars-east-9")


def test_every_botocore_failure_becomes_advice() -> None:
    parser_error = explain(ResponseParserError("Unable to parse response (junk)"), "listing")
    assert "what to do" in str(parser_error) and "\n" in str(parser_error)
    connection = explain(EndpointConnectionError(endpoint_url="https://x"), "listing")
    assert "cannot reach AWS" in str(connection)
    with pytest.raises(CloudError), aws_errors("listing"):
        raise ResponseParserError("bad")


# -- idle stop, the bill, spot interruptions ------------------------------------------------


@pytest.mark.parametrize(("text", "minutes"), [("30m", 30), ("2h", 120), ("off", None)])
def test_idle_stop_parsing(text: str, minutes: int | None) -> None:
    expected = None if minutes is None else timedelta(minutes=minutes)
    assert guard.parse_idle(text) == expected


@pytest.mark.parametrize("text", ["1m", "8d", "never", ""])
def test_bad_idle_stop_is_refused(text: str) -> None:
    with pytest.raises(CloudError, match="--idle-stop"):
        guard.parse_idle(text)


def user_data(aws: Aws, instance: dict[str, Any]) -> str:
    value = aws.client("ec2").describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    return base64.b64decode(value).decode()


def test_idle_watchdog_is_installed_unless_off(aws: Aws, tmp_path: Path, image_id: str) -> None:
    on = launch(aws, tmp_path, image_id, name="on", idle_stop="45m")
    script = user_data(aws, on)
    assert "DLSTATION_IDLE_SECONDS=2700" in script
    assert "idle_watchdog.py" in script and "dlstation-idle.timer" in script
    assert guard.tags_of(on)[guard.TAG_IDLE] == "45m"
    off = launch(aws, tmp_path, image_id, name="off", idle_stop="off")
    assert "dlstation-idle" not in user_data(aws, off)
    assert guard.tags_of(off)[guard.TAG_IDLE] == "off"


def test_launch_records_the_planned_price(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id)
    tags = guard.tags_of(instance)
    assert tags[guard.TAG_PRICE] == "1.0060"
    assert tags[guard.TAG_PRICE_BASIS].startswith("on-demand, ")


def test_terminate_prints_the_bill(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id)
    ended = instance["LaunchTime"] + timedelta(hours=2, minutes=30)
    done = fleet.terminate(aws.client("ec2"), [instance], scope(aws, tmp_path), ended)
    (bill,) = done.bills
    assert bill.startswith(f"lab ({instance['InstanceId']}): ran 2h30m, $2.52 at $1.0060/h")
    assert "(on-demand, " in bill
    assert f"cost: {bill}" in done.lines()


def test_cost_so_far_uses_the_planned_price(aws: Aws, tmp_path: Path, image_id: str) -> None:
    instance = launch(aws, tmp_path, image_id)
    instance["Tags"] = [
        t if t["Key"] != guard.TAG_PRICE else {**t, "Value": "2.0"} for t in instance["Tags"]
    ]
    row = fleet.describe(
        instance, "us-east-1", Catalog.load(), instance["LaunchTime"] + timedelta(hours=1)
    )
    assert row["cost_usd"] == pytest.approx(2.0)


def test_interrupted_spot_instance_stays_in_the_list() -> None:
    interrupted = {
        "InstanceId": "i-1",
        "InstanceType": "g5.xlarge",
        "InstanceLifecycle": "spot",
        "LaunchTime": NOW,
        "State": {"Name": "terminated"},
        "StateReason": {
            "Code": "Server.SpotInstanceTermination",
            "Message": "Server.SpotInstanceTermination: Spot instance termination",
        },
        "Tags": [{"Key": "Name", "Value": "cheap"}],
    }
    assert fleet.shown_in_list(interrupted)
    row = fleet.describe(interrupted, "us-east-1", Catalog.load(), NOW)
    assert row["state"] == "interrupted" and "Spot instance termination" in row["reason"]
    user_ended = {**interrupted, "StateReason": {"Code": "Client.UserInitiatedShutdown"}}
    assert not fleet.shown_in_list(user_ended)


class ConsoleOutput:
    """An EC2 client whose console shows the given text (moto's console is fixed)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def get_console_output(self, **kwargs: Any) -> dict[str, str]:
        return {"Output": base64.b64encode(self.text.encode()).decode()}


def test_idle_time_comes_from_the_watchdogs_console_lines() -> None:
    text = (
        "dlstation-idle: idle 3m of 30m: nothing in use\n"
        "dlstation-idle: busy, idle 0m of 30m: ssh: 1 session(s) open\n"
        "dlstation-idle: idle 12m of 30m: nothing in use\n"
    )
    assert fleet.idle_time(ConsoleOutput(text), {"InstanceId": "i-1"}) == "idle 12m of 30m"
    busy = text + "dlstation-idle: busy, idle 0m of 30m: ssh: 1 connection(s) to port 22\n"
    assert fleet.idle_time(ConsoleOutput(busy), {"InstanceId": "i-1"}) == "busy: ssh"
    assert fleet.idle_time(ConsoleOutput("booting\n"), {"InstanceId": "i-1"}) is None


# -- one instance per name ----------------------------------------------------------------


def test_two_same_name_launches_agree_on_the_one_to_keep(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    ec2 = aws.client("ec2")
    first = launch(aws, tmp_path, image_id, name="race")["InstanceId"]
    # A second launch that ran concurrently (find_existing saw nothing) tagged the same name.
    tags = guard.tag_list(
        {
            guard.TAG_CREATED_BY: guard.CREATED_BY,
            guard.TAG_OWNER: aws.caller(),
            guard.TAG_NAME: "race",
        }
    )
    second = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    said: list[str] = []
    chosen = Launcher(
        aws, Catalog.load(), now=lambda: NOW, key_folder=tmp_path / "keys", say=said.append
    )
    # Each launch checks in turn; both must name the same survivor.
    kept = {chosen.one_per_name("race", own)["InstanceId"] for own in (first, second)}
    assert len(kept) == 1
    (survivor,) = kept
    (loser,) = {first, second} - kept
    assert len(said) == 1 and f"terminated this one ({loser})" in said[0]
    states = {i["InstanceId"]: i["State"]["Name"] for i in fleet.owned_instances(ec2, None)}
    assert states[survivor] == "running"
    assert states[loser] in ("shutting-down", "terminated")


def test_a_listing_that_lagged_behind_still_ends_on_the_oldest(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look saw only this launch; the look once it is ready sees an older one of the
    same name (EC2's listing lags): the launch hands over the older one, not itself."""
    chosen = launcher(aws, tmp_path)
    looks = iter(["i-mine", "i-older"])
    monkeypatch.setattr(chosen, "keep_oldest", lambda _name, _own: next(looks))
    monkeypatch.setattr(chosen, "wait_until_ready", lambda instance: {"InstanceId": instance})
    assert chosen.one_per_name("race", "i-mine") == {"InstanceId": "i-older"}


def test_a_launch_not_listed_yet_keeps_itself(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2's listing has not caught up with this launch: nothing to compare, nothing ended."""
    chosen = launcher(aws, tmp_path)
    monkeypatch.setattr(chosen, "live_named", lambda _name: [])
    monkeypatch.setattr(chosen, "ec2", NoAws())
    assert chosen.keep_oldest("race", "i-mine") == "i-mine"


def test_a_launch_planned_before_another_started_follows_it(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    said: list[str] = []
    late = Launcher(
        aws, Catalog.load(), now=lambda: NOW, key_folder=tmp_path / "keys", say=said.append
    )
    plan = late.preflight(request(image_id, name="race"))  # nothing named race yet
    first = launch(aws, tmp_path, image_id, name="race")  # another launch got there first
    followed = late.launch(plan)
    assert followed["InstanceId"] == first["InstanceId"]
    assert said == [
        f"'race' was launched meanwhile ({first['InstanceId']}); not starting a second one"
    ]
    assert [i["InstanceId"] for i in late.live_named("race")] == [first["InstanceId"]]


def test_ensure_returns_the_existing_instance(aws: Aws, tmp_path: Path, image_id: str) -> None:
    first = launch(aws, tmp_path, image_id)
    again = launcher(aws, tmp_path).ensure(request(image_id))
    assert again["InstanceId"] == first["InstanceId"]


# -- checked before anything is created ---------------------------------------------------


def test_dry_run_sends_the_launchs_own_request(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    chosen = launcher(aws, tmp_path)
    calls = fail(ec2, "RunInstances", "Unused", when=lambda params: False)
    plan = chosen.preflight(request(image_id, spot=True, volume_gb=16384))
    chosen.check_permissions(plan)
    chosen.launch(plan)
    dry, real = calls[0], calls[-1]
    assert dry["DryRun"] is True and "DryRun" not in real
    for key in ("BlockDeviceMappings", "InstanceMarketOptions", "MetadataOptions", "UserData"):
        assert dry[key] == real[key], key
    assert dry["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 16384
    assert set(real) - set(dry) <= {"KeyName", "SecurityGroupIds"}, "made by the launch itself"


def test_a_crash_exits_70_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: cli.Commands) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli.Commands, "offers", broken)
    assert cli.main(["--region", "us-east-1", "offers"]) == exitcodes.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("dlcloud: internal error")


def test_a_key_file_an_inventory_host_names_is_kept(
    aws: Aws, tmp_path: Path, image_id: str
) -> None:
    ec2 = aws.client("ec2")
    instance = launch(aws, tmp_path, image_id)
    key_file = tmp_path / "keys" / "dlstation-us-east-1.pem"
    elsewhere = {**instance, "InstanceId": "i-0elsewhere"}
    inventory.add_host(tmp_path / "dlcloud.yml", "far", elsewhere, "us-west-2", key_file)
    done = fleet.terminate(ec2, [instance], scope(aws, tmp_path), later())
    assert done.key_pairs == [] and key_file.is_file()
    assert any("host far names it" in kept for kept in done.kept)
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["dlstation-us-east-1"]


def test_a_colleagues_key_pair_and_group_are_kept(aws: Aws, tmp_path: Path, image_id: str) -> None:
    ec2 = aws.client("ec2")
    instance = launch(aws, tmp_path, image_id)
    group = instance["SecurityGroups"][0]["GroupId"]
    pair = ec2.describe_key_pairs()["KeyPairs"][0]["KeyPairId"]
    colleague = "arn:aws:iam::123456789012:user/colleague"
    ec2.create_tags(Resources=[group, pair], Tags=[{"Key": guard.TAG_OWNER, "Value": colleague}])
    done = fleet.terminate(ec2, [instance], scope(aws, tmp_path), later())
    assert done.security_groups == [] and done.key_pairs == []
    assert f"security group {group}: it is {colleague}'s" in done.kept
    assert f"key pair dlstation-us-east-1: it is {colleague}'s" in done.kept


def test_a_group_of_dlclouds_name_it_may_not_change_is_refused_saying_whose() -> None:
    mine, colleague = "arn:aws:iam::123456789012:user/me", "arn:aws:iam::123456789012:user/co"
    base = {"GroupName": "dlstation-ssh-lab-0123456789", "VpcId": "vpc-1"}
    theirs = {**base, "Tags": guard.tag_list({**guard.Labels("lab", colleague, NOW, "").created()})}
    users = {**base, "Tags": [{"Key": guard.TAG_OWNER, "Value": mine}]}
    guard.check_group(
        {**base, "Tags": guard.tag_list(guard.Labels("lab", mine, NOW, "").created())}, mine
    )
    with pytest.raises(CloudError) as refused:
        guard.check_group(theirs, mine)
    assert f"in vpc-1 that belongs to {colleague}; dlcloud will not change its rules" in str(
        refused.value
    )
    with pytest.raises(CloudError) as refused:
        guard.check_group(users, mine)
    assert "in vpc-1 that dlcloud did not create; dlcloud will not change its rules" in str(
        refused.value
    )


@pytest.mark.parametrize("claimed", [None, "yesterday", ""], ids=["no tag", "garbled", "empty"])
def test_a_resource_without_a_readable_claim_is_not_recently_used(claimed: str | None) -> None:
    """Only a launch's own claim keeps an unused group or key pair from clean-up; a missing or
    garbled tag (an older dlcloud's, a user's edit) never keeps one forever."""
    tags = [] if claimed is None else [{"Key": guard.TAG_CLAIMED, "Value": claimed}]
    assert guard.recently_used({"Tags": tags}, NOW) is False
    fresh = [{"Key": guard.TAG_CLAIMED, "Value": NOW.isoformat(timespec="seconds")}]
    assert guard.recently_used({"Tags": fresh}, NOW + guard.GRACE / 2) is True
    assert guard.recently_used({"Tags": fresh}, NOW + guard.GRACE) is False


def test_list_shows_live_and_spot_interrupted_instances_only(
    aws: Aws, tmp_path: Path, image_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    live = launch(aws, tmp_path, image_id, name="up")
    ended = launch(aws, tmp_path, image_id, name="ended")
    aws.client("ec2").terminate_instances(InstanceIds=[ended["InstanceId"]])
    assert main(["--region", "us-east-1", "list"]) == 0
    shown = capsys.readouterr().out
    assert live["InstanceId"] in shown and ended["InstanceId"] not in shown
    spot = {"State": {"Name": "terminated"}, "StateReason": {"Code": fleet.SPOT_INTERRUPTED}}
    assert fleet.shown_in_list(spot) is True
    assert (
        fleet.shown_in_list({**spot, "StateReason": {"Code": "Client.UserInitiatedShutdown"}})
        is False
    )
    assert all(
        fleet.shown_in_list({"State": {"Name": state}}) is True
        for state in ("pending", "running", "stopping", "stopped", "shutting-down")
    )
