"""cloud/README.md, A walk-through: dlcloud against moto's AWS server on 127.0.0.1."""

from __future__ import annotations

from tests.docs.transcript import Session, Transcript

CIDR = "203.0.113.7/32"
RACE = "for i in 1 2 3; do dlcloud launch --instance-type g5.xlarge --name race --region us-east-1 --ami-id {image} --ssh-cidr {cidr} --yes >race-$i.log 2>&1 & done; wait"  # noqa: E501


def record(session: Session) -> None:
    with session.moto() as ec2:
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        session.run(
            "dlcloud launch --instance-type g5.xlarge --name 'lab 1;rm -rf /' --region us-east-1"
            " --yes",
            expect=2,
        )
        session.run(
            "dlcloud launch --instance-type g5.xlarge --name lab --region us-east-1"
            f" --ami-id {image} --ssh-cidr {CIDR} --ttl 4h --idle-stop 30m --yes"
        )
        session.run("dlcloud list --region us-east-1")
        session.run("dlcloud ssh lab --print --region us-east-1")

        session.note("")
        session.note(
            "# meanwhile, outside dlcloud, the user made key pair mykey (its file in the key"
            " folder) and a t3.micro of their own with it"
        )
        key = ec2.create_key_pair(KeyName="mykey", KeyType="ed25519")
        pem = session.workdir / "keys" / "mykey.pem"
        pem.write_text(key["KeyMaterial"])
        pem.chmod(0o600)
        ec2.run_instances(
            ImageId=image, InstanceType="t3.micro", KeyName="mykey", MinCount=1, MaxCount=1
        )

        session.run(
            "dlcloud launch --instance-type g6.xlarge --name cheap --spot --key-name mykey"
            f" --region us-east-1 --ami-id {image} --ssh-cidr {CIDR} --idle-stop off --yes"
        )
        session.run("dlcloud terminate --all --yes --region us-east-1")
        session.run("dlcloud --region mars-east-9 list", expect=2)

        session.run(RACE.format(image=image, cidr=CIDR))
        # Whether a launch steps aside or finds the winner running depends on timing; every
        # one of the three ends naming the instance that stays.
        session.run("grep -h '^race:' race-*.log")
        session.run("dlcloud list --region us-east-1")
        session.run("dlcloud terminate race --yes --region us-east-1")
        session.run("dlcloud reap --region us-east-1")


TRANSCRIPT = Transcript(record, marks=("motoserver", "slow"), spaced=True)
