"""What dlcloud may touch, and what it refuses before touching anything, against moto's server.

Ownership: dlcloud acts only on what carries its creation tag and the caller's owner tag.
Refusals: a bad value exits 2 with one line, and the account and the key folder are as before.
"""

from __future__ import annotations

import contextlib
import io
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.training.backends import BACKENDS
from bench.training.workloads import WORKLOADS
from cloud import cli, guard, inventory
from tests.harness.dlcloud import (
    CIDR,
    COLLEAGUE,
    caller,
    dlcloud,
    dlcloud_tags,
    ec2,
    image_of,
    launch_args,
    live,
    run_tagged,
)

pytestmark = [pytest.mark.motoserver, pytest.mark.slow]


@pytest.fixture
def env(moto_env: dict[str, str]) -> dict[str, str]:
    """moto's server, empty, and an environment that points dlcloud at it."""
    return moto_env


def account(client: Any, key_folder: Path) -> dict[str, Any]:
    """Everything a refused command must leave as it was."""
    reservations = client.describe_instances()["Reservations"]
    return {
        "instances": sorted(
            (i["InstanceId"], i["State"]["Name"]) for r in reservations for i in r["Instances"]
        ),
        "volumes": sorted(v["VolumeId"] for v in client.describe_volumes()["Volumes"]),
        "key_pairs": sorted(k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]),
        "groups": sorted(
            (g["GroupId"], json.dumps(g.get("IpPermissions", []), sort_keys=True, default=str))
            for g in client.describe_security_groups()["SecurityGroups"]
        ),
        "key_folder": sorted((p.name, p.read_bytes()) for p in key_folder.glob("*") if p.is_file())
        if key_folder.is_dir()
        else [],
    }


@pytest.fixture
def in_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """moto's server for dlcloud's main() called in this process (fast enough for Hypothesis)."""
    for key in ("AWS_ENDPOINT_URL", "DLCLOUD_KEY_DIR", "DLCLOUD_INVENTORY"):
        monkeypatch.setenv(key, env[key])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    return env


def no_address() -> str:
    raise OSError("checkip is unreachable")


def run_main(*argv: str) -> tuple[int, str]:
    """dlcloud's main in this process: exit code and stderr (argparse's exits included)."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(["--region", "us-east-1", *argv], checkip=no_address)
        except SystemExit as done:
            code = int(done.code or 0)
    return code, errors.getvalue()


def assert_refused(code: int, stderr: str, one_line: bool = True) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    if one_line:
        assert len(lines) == 1 and lines[0].startswith("dlcloud: "), stderr


# -- 1 and 4: one ownership rule ---------------------------------------------------------


def test_reap_never_deletes_a_users_volume_or_a_kept_root_disk(env: dict[str, str]) -> None:
    client = ec2(env)
    users = client.create_volume(
        AvailabilityZone="us-east-1a",
        Size=500,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "Project", "Value": "dlstation"}]}
        ],
    )["VolumeId"]
    # What a dlcloud root disk the user kept (DeleteOnTermination=false) carries once detached.
    kept = client.create_volume(
        AvailabilityZone="us-east-1a",
        Size=100,
        TagSpecifications=[{"ResourceType": "volume", "Tags": dlcloud_tags(caller(env), "lab")}],
    )["VolumeId"]
    reaped = dlcloud(env, "reap", "--yes")
    assert reaped.returncode == 0, reaped.stderr
    assert "deleted volume" not in reaped.stdout
    assert f"volume {kept} (100 GiB, lab): reap never deletes a disk" in reaped.stdout
    volumes = {v["VolumeId"] for v in client.describe_volumes()["Volumes"]}
    assert {users, kept} <= volumes


def test_terminate_all_and_reap_touch_only_the_callers_instances(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    assert dlcloud(env, *launch_args(image, "mine")).returncode == 0
    (mine,) = live(client, Name="mine")
    tagged = run_tagged(client, image, [{"Key": "Project", "Value": "dlstation"}])
    colleague = run_tagged(client, image, dlcloud_tags(COLLEAGUE, "c"))
    copied = run_tagged(
        client,
        image,
        [
            {"Key": "Project", "Value": "dlstation"},
            {"Key": guard.TAG_EXPIRES, "Value": "2020-01-01T00:00:00+00:00"},
        ],
    )
    reaped = dlcloud(env, "reap", "--yes")
    assert reaped.returncode == 0, reaped.stderr
    assert copied not in reaped.stdout

    terminated = dlcloud(env, "terminate", "--all", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert f"terminated {mine['InstanceId']}" in terminated.stdout
    states = {i["InstanceId"] for i in live(client)}
    assert states == {tagged, colleague, copied}

    theirs = dlcloud(env, "terminate", "--all", "--any-owner", "--yes")
    assert theirs.returncode == 0, theirs.stderr
    assert f"c ({colleague}, arn:aws:iam::123456789012:user/colleague's)" in theirs.stdout
    assert {i["InstanceId"] for i in live(client)} == {tagged, copied}


def test_a_campaign_never_reuses_a_hand_launched_instance(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    by_hand = dlcloud(
        env, *launch_args(image, "exp-g5-xlarge", "--ttl", "7d", "--idle-stop", "off")
    )
    assert by_hand.returncode == 0, by_hand.stderr
    (instance,) = live(client, Name="exp-g5-xlarge")
    before = account(client, Path(env["DLCLOUD_KEY_DIR"]))
    bench = dlcloud(
        env,
        "bench",
        "--types",
        "g5.xlarge",
        "--name",
        "exp",
        "--out",
        str(Path(env["DLCLOUD_KEY_DIR"]).parent / "exp"),
        "--ami-id",
        image,
        "--ssh-cidr",
        CIDR,
        "--yes",
    )
    assert bench.returncode == 2, bench.stdout + bench.stderr
    assert f"{instance['InstanceId']}, which `dlcloud launch` started" in bench.stderr
    assert account(client, Path(env["DLCLOUD_KEY_DIR"])) == before


# -- 2: SSH from the given address only --------------------------------------------------


def ssh_rules(client: Any, instance: dict[str, Any]) -> set[str]:
    groups = client.describe_security_groups(
        GroupIds=[g["GroupId"] for g in instance["SecurityGroups"]]
    )["SecurityGroups"]
    return {r["CidrIp"] for g in groups for p in g["IpPermissions"] for r in p["IpRanges"]}


def test_each_launch_admits_its_own_address_only(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    folder = Path(env["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    wide = dlcloud(env, *launch_args(image, "monday"), "--ssh-cidr", "0.0.0.0/1")
    assert_refused(wide.returncode, wide.stderr)
    assert "--allow-wide-cidr" in wide.stderr
    assert account(client, folder) == before
    asked = ["--ssh-cidr", "0.0.0.0/1", "--allow-wide-cidr"]
    assert dlcloud(env, *launch_args(image, "monday"), *asked).returncode == 0
    cafe = dlcloud(env, *launch_args(image, "cafe"), "--ssh-cidr", "192.0.2.10/32")
    assert cafe.returncode == 0
    assert dlcloud(env, "terminate", "monday", "--yes").returncode == 0
    home = dlcloud(env, *launch_args(image, "home"), "--ssh-cidr", "203.0.113.7/32")
    assert home.returncode == 0, home.stderr
    (instance,) = live(client, Name="home")
    assert ssh_rules(client, instance) == {"203.0.113.7/32"}
    (other,) = live(client, Name="cafe")
    assert ssh_rules(client, other) == {"192.0.2.10/32"}
    # monday's group outlived monday (younger than the grace period): a new monday from
    # another address finds the old rule revoked.
    again = dlcloud(env, *launch_args(image, "monday"), "--ssh-cidr", "198.51.100.9/32")
    assert again.returncode == 0, again.stderr
    (monday,) = live(client, Name="monday")
    assert ssh_rules(client, monday) == {"198.51.100.9/32"}


# -- 9: the user's files stay theirs -----------------------------------------------------


def test_a_users_inventory_is_refused_before_launching(env: dict[str, str], tmp_path: Path) -> None:
    client = ec2(env)
    image = image_of(client)
    folder = Path(env["DLCLOUD_KEY_DIR"])
    users = tmp_path / "hosts.yml"
    users.write_text("# mine\nwebservers:\n  hosts: {web1: {}}\ndatabases:\n  hosts: {db1: {}}\n")
    ini = tmp_path / "hosts.ini"
    ini.write_text("[webservers]\nweb1\n")
    before = account(client, folder)
    for path in (users, ini, tmp_path):
        text = path.read_text() if path.is_file() else None
        done = dlcloud(env, *launch_args(image, "lab"), "--inventory", str(path))
        assert_refused(done.returncode, done.stderr)
        assert account(client, folder) == before
        assert (path.read_text() if path.is_file() else None) == text


def test_hosts_whose_instances_ended_leave_the_inventory(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    assert dlcloud(env, *launch_args(image, "lab")).returncode == 0
    assert dlcloud(env, *launch_args(image, "lab2")).returncode == 0
    (lab,) = live(client, Name="lab")
    client.terminate_instances(InstanceIds=[lab["InstanceId"]])  # as the TTL watchdog does
    reaped = dlcloud(env, "reap", "--yes")
    assert reaped.returncode == 0, reaped.stderr
    document = inventory.load(Path(env["DLCLOUD_INVENTORY"]).read_text())
    assert set(document["all"]["children"]["dlami"]["hosts"]) == {"lab2"}
    assert (Path(env["DLCLOUD_KEY_DIR"]) / "dlstation-us-east-1.pem").is_file()


# -- 10, 11, 12: refused before anything exists, in one line -----------------------------

BAD_LAUNCH = [
    ("--ssh-cidr", "0.0.0.0/0"),
    ("--ssh-cidr", "::/0"),
    ("--ssh-cidr", "2001:db8::/64"),
    ("--ssh-cidr", "203.0.113.7/33"),
    ("--ssh-cidr", "203.0.113.7/32,198.51.100.1/32"),
    ("--ssh-cidr", "10.0.0.0/8"),
    ("--key-name", "sub/dir"),
    ("--key-name", "k" * 300),
    ("--key-name", "../escaped"),
    ("--name", "lab\n"),
    ("--name", ""),
    ("--ttl", "\uff14h"),
    ("--ttl", "9" * 300 + "h"),
    ("--idle-stop", "0m"),
    ("--volume-gb", "99999999"),
    ("--volume-gb", "29"),
]


@pytest.mark.parametrize(("option", "value"), BAD_LAUNCH)
def test_bad_launch_values_change_nothing(
    in_process: dict[str, str], option: str, value: str
) -> None:
    client = ec2(in_process)
    image = image_of(client)
    folder = Path(in_process["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    argv = [*launch_args(image, "lab"), option, value]
    code, stderr = run_main(*argv, "--dry-run") if option == "--volume-gb" else run_main(*argv)
    assert_refused(code, stderr)
    assert "0.0.0.0/0" not in stderr or value == "0.0.0.0/0"
    assert account(client, folder) == before
    assert not (Path(in_process["DLCLOUD_KEY_DIR"]).parent / "escaped.pem").exists()


def test_no_address_and_the_users_group_are_refused_before_the_key_pair(
    in_process: dict[str, str],
) -> None:
    client = ec2(in_process)
    image = image_of(client)
    folder = Path(in_process["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    no_cidr = [a for a in launch_args(image, "lab") if a not in ("--ssh-cidr", CIDR)]
    assert_refused(*run_main(*no_cidr))
    vpc = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    client.create_security_group(
        GroupName=guard.ssh_group_name("lab", caller(in_process)),
        Description="the user's own",
        VpcId=vpc["VpcId"],
    )
    before = account(client, folder)
    code, stderr = run_main(*launch_args(image, "lab"))
    assert_refused(code, stderr)
    assert "dlcloud did not create" in stderr
    assert account(client, folder) == before


def bench_argv(tmp: Path, image: str, *extra: str) -> list[str]:
    return [
        "bench",
        "--types",
        "g5.xlarge",
        "--name",
        "exp",
        "--out",
        str(tmp / "exp"),
        "--ami-id",
        image,
        "--ssh-cidr",
        CIDR,
        "--yes",
        *extra,
    ]


BAD_BENCH = [
    ("--workloads", "no-such"),
    ("--backend", "nope"),
    ("--repeats", "-3"),
    ("--bench-args", '"unclosed'),
    ("--out", "/etc/hostname"),
    ("--key-name", "sub/dir"),
    ("--ttl", "\uff14h"),
]


@pytest.mark.parametrize(("option", "value"), BAD_BENCH)
def test_bad_bench_values_change_nothing(
    in_process: dict[str, str], tmp_path: Path, option: str, value: str
) -> None:
    client = ec2(in_process)
    folder = Path(in_process["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    assert_refused(*run_main(*bench_argv(tmp_path, image_of(client), option, value)))
    assert account(client, folder) == before


def test_a_damaged_campaign_state_is_one_line(in_process: dict[str, str], tmp_path: Path) -> None:
    client = ec2(in_process)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "state.json").write_text('{"hosts": [{"instance_type": ')
    before = account(client, Path(in_process["DLCLOUD_KEY_DIR"]))
    code, stderr = run_main(*bench_argv(tmp_path, image_of(client)))
    assert_refused(code, stderr)
    assert "state.json is damaged" in stderr
    assert account(client, Path(in_process["DLCLOUD_KEY_DIR"])) == before


@pytest.fixture
def launched(in_process: dict[str, str]) -> Iterator[dict[str, str]]:
    """One instance of the caller's, so terminate, reap and list have something to refuse on."""
    client = ec2(in_process)
    code, stderr = run_main(*launch_args(image_of(client), "lab"))
    assert code == 0, stderr
    yield in_process


@pytest.mark.parametrize(
    "argv",
    [
        ["terminate", "lab\n", "--yes"],
        ["terminate", "lab", "--yes", "--inventory", "/"],
        ["reap", "--yes", "--inventory", "/"],
        ["list", "--regions", "mars-east-9"],
    ],
)
def test_bad_terminate_reap_and_list_values_change_nothing(
    launched: dict[str, str], argv: list[str]
) -> None:
    client = ec2(launched)
    folder = Path(launched["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    assert_refused(*run_main(*argv))
    assert account(client, folder) == before


# -- hostile values, generated ------------------------------------------------------------

LETTERS = string.ascii_letters + string.digits
word = st.text(alphabet=LETTERS, max_size=12)
bad_names = st.one_of(
    st.just(""),
    st.builds(
        lambda a, bad, b: a + bad + b,
        word,
        st.sampled_from(["\n", " ", "/", ";", "$(id)", "_", ".", "é", "\t", "'", "\\"]),
        word,
    ),
    word.map(lambda w: f"-{w}"),
    st.integers(64, 300).map(lambda n: "a" * n),
)
bad_durations = st.one_of(
    st.from_regex(r"[0-9]{6,300}[mhd]", fullmatch=True),
    st.from_regex("[\uff10-\uff19]{1,3}[mhd]", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}[mhd]\n", fullmatch=True),
    st.from_regex(r"-[0-9]{1,3}[mhd]", fullmatch=True),
    st.text(alphabet=st.characters(exclude_categories=["Nd"]), max_size=20).filter(
        lambda t: t.lower() != "off"
    ),
)
bad_key_names = st.one_of(
    st.builds(lambda a, bad, b: a + bad + b, word, st.sampled_from(["/", "..", " ", "\n"]), word),
    word.map(lambda w: f".{w}"),
    st.integers(129, 400).map(lambda n: "k" * n),
)
bad_cidrs = st.one_of(
    st.ip_addresses(v=6).map(lambda a: f"{a}/64"),
    st.just("::/0"),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 15)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.ip_addresses(v=4), st.integers(33, 99)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)).map(lambda t: f"{t[0]}/32,{t[1]}/32"),
    st.text(alphabet=string.ascii_letters + " ,;", max_size=20),
)
bad_volumes = st.one_of(st.integers(max_value=29), st.integers(min_value=16385)).map(str)
LAUNCH_OPTIONS = {
    "--name": bad_names,
    "--ttl": bad_durations,
    "--idle-stop": bad_durations,
    "--key-name": bad_key_names,
    "--ssh-cidr": bad_cidrs,
    "--volume-gb": bad_volumes,
}
BENCH_OPTIONS = {
    **LAUNCH_OPTIONS,
    "--workloads": st.text(min_size=1, max_size=20).filter(
        lambda t: any(w not in WORKLOADS for w in t.split(",") if w) or not t.strip(",")
    ),
    "--backend": st.text(max_size=20).filter(lambda t: t not in BACKENDS),
    "--repeats": st.integers(max_value=0).map(str),
    "--bench-args": st.text(alphabet=LETTERS + " -", max_size=20).map(lambda t: f'"{t}'),
}
HYPOTHESIS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def option_and_value(options: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """`--option=value`: the = form hands argparse the value verbatim, dashes and all."""
    return st.sampled_from(sorted(options)).flatmap(
        lambda option: options[option].map(lambda value: f"{option}={value}")
    )


def refuses_and_changes_nothing(env: dict[str, str], *argv: str) -> None:
    client = ec2(env)
    folder = Path(env["DLCLOUD_KEY_DIR"])
    before = account(client, folder)
    assert_refused(*run_main(*argv))
    assert account(client, folder) == before


@HYPOTHESIS
@given(hostile=option_and_value(LAUNCH_OPTIONS))
def test_hostile_launch_options(in_process: dict[str, str], hostile: str) -> None:
    image = image_of(ec2(in_process))
    refuses_and_changes_nothing(in_process, *launch_args(image, "lab"), hostile)


@HYPOTHESIS
@given(hostile=option_and_value(BENCH_OPTIONS))
def test_hostile_bench_options(in_process: dict[str, str], hostile: str) -> None:
    image = image_of(ec2(in_process))
    folder = Path(in_process["DLCLOUD_KEY_DIR"]).parent / "campaigns"
    refuses_and_changes_nothing(in_process, *bench_argv(folder, image, hostile))


@HYPOTHESIS
@given(name=bad_names, inventory=st.sampled_from(["", "/", "/etc/hostname"]))
def test_hostile_terminate_reap_and_list_options(
    launched: dict[str, str], name: str, inventory: str
) -> None:
    chosen = ["--inventory", inventory] if inventory else []
    refuses_and_changes_nothing(launched, "terminate", "--yes", "--", name)
    if inventory:
        refuses_and_changes_nothing(launched, "terminate", "--all", "--yes", *chosen)
        refuses_and_changes_nothing(launched, "reap", "--yes", *chosen)
    refuses_and_changes_nothing(launched, "list", f"--regions={name or 'x'}")
