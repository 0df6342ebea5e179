"""cloud/README.md, dlcloud bench: a campaign against moto, Ansible on this machine, and its resume.

moto's "instances" have no SSH: Ansible reaches them with a local connection, its paths in the
scratch folder and this venv standing in for the hosts' (as tests/integration/test_dlcloud_bench.py
does), and SSH is probed on a loopback listener.
"""

from __future__ import annotations

import socket

from tests.docs.transcript import Session, Transcript

HOST_VARS = """\
# The "instances" are this machine: local connection, this venv, each one's paths under ./host/NAME.
ansible_connection: local
ansible_python_interpreter: "{{ ansible_playbook_python }}"
dlstation_configure_keras_env: false
dlstation_configure_jupyter: false
keras_env_root: "{root}/host/{{ inventory_hostname }}"
keras_env_venv: "{{ ansible_playbook_python | dirname | dirname }}"
keras_env_backends: [jax]
verify_run_args: --synthetic --epochs 1 --no-imds
bench_remote_result: "{root}/host/remote/bench-{{ inventory_hostname }}.json"
"""
BENCH = (
    "dlcloud --region us-east-1 bench --types g5.xlarge,g6.xlarge --name l4-vs-a10g"
    " --out campaign --ttl 1h --backend jax --bench-args 'reuters --synthetic --epochs 2 --no-imds'"
    " --ami-id {image} --ssh-cidr 203.0.113.7/32 --ansible-arg=-e --ansible-arg=@local-host.yml"
    " --yes"
)


def record(session: Session) -> None:
    with session.moto() as ec2, socket.create_server(("127.0.0.1", 0)) as ssh:
        # The kernel completes a connect to a listening socket: enough for the SSH probe.
        session.env["DLCLOUD_SSH_PROBE"] = f"127.0.0.1:{ssh.getsockname()[1]}"
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        session.write("local-host.yml", HOST_VARS.replace("{root}", str(session.workdir)))
        session.run("cat local-host.yml")
        session.run(BENCH.format(image=image), show_exit=True)
        session.run("dlcloud --region us-east-1 list")
        session.run(BENCH.format(image=image), show_exit=True)


# Lines of the two hosts' parallel work: launching, SSH, fetching, the bill.
PER_HOST = r"^\[ *<duration> +\$<cost>\] +l4-vs-a10g-g[56]-xlarge: "
TRANSCRIPT = Transcript(
    record,
    marks=("motoserver", "slow"),
    display_dir="/tmp/cbr",
    masks=(
        # The rank and rates follow measured throughput: the two runs shared one CPU.
        (r"^\| \d+ \| (g[56]\.xlarge)", r"| <rank> | \1"),
        (r"\| [\d,]+ \| [\d,]+ \|", "| <figure> | <figure> |"),
    ),
    # The heartbeat, and the line a launch prints when the other one holds the key folder.
    optional=(r": still in ", r"^dlcloud: waiting for "),
    unordered=(PER_HOST, r"^\| <rank> \| ", r"^ +terminated i-…$", r"^ +cost: l4-vs-a10g-"),
)
