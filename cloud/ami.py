"""Find the newest AWS Deep Learning AMI: the public SSM parameter, else describe_images by name."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from cloud.aws import CloudError, aws_errors

# Ubuntu 24.04's Python 3.12 gets the newest Keras and JAX in setup.yml's version table; on
# 22.04 (Python 3.10, still selectable) Keras stops at 3.12 and JAX at 0.6.
DEFAULT_AMI_TYPE = "base-oss-nvidia-driver-gpu-ubuntu-24.04"
SSM_PATH = "/aws/service/deeplearning/ami/{arch}/{ami_type}/latest/ami-id"
# The base DLAMI of each Ubuntu release dlstation sets up, by `dlcloud launch --os`.
BY_OS: dict[str, str] = {
    f"ubuntu-{version}": f"base-oss-nvidia-driver-gpu-ubuntu-{version}"
    for version in ("22.04", "24.04", "26.04")
}
# describe_images name patterns for the fallback, per AMI type.
NAME_PATTERNS: dict[str, str] = {
    ami_type: f"Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu {ami_type[-5:]}) *"
    for ami_type in BY_OS.values()
}


def choose_type(ami_type: str | None, os_name: str | None) -> str:
    """The DLAMI type of --ami-type or --os (not both), else the default."""
    if ami_type and os_name:
        raise CloudError("give --os or --ami-type, not both", 2)
    if os_name:
        return BY_OS[os_name]
    return ami_type or DEFAULT_AMI_TYPE


def ssm_parameter(ami_type: str, arch: str = "x86_64") -> str:
    return SSM_PATH.format(arch=arch, ami_type=ami_type)


def resolve(ssm: Any, ec2: Any, ami_type: str, arch: str = "x86_64") -> tuple[str, str]:
    """(ami_id, how it was found). Raises CloudError naming --ami-id when neither way works."""
    parameter = ssm_parameter(ami_type, arch)
    try:
        value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
        return str(value), f"SSM {parameter}"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in (
            "ParameterNotFound",
            "AccessDeniedException",
        ):
            raise
    pattern = NAME_PATTERNS.get(ami_type)
    if pattern is None:
        raise CloudError(
            f"SSM has no {parameter} and dlcloud knows no image name for {ami_type!r}; "
            "pass --ami-id or a known --ami-type"
        )
    with aws_errors("looking up Deep Learning AMIs"):
        images = ec2.describe_images(
            Owners=["amazon"],
            Filters=[
                {"Name": "name", "Values": [pattern]},
                {"Name": "architecture", "Values": [arch]},
                {"Name": "state", "Values": ["available"]},
            ],
        )["Images"]
    if not images:
        raise CloudError(
            f"no Deep Learning AMI {ami_type!r} found in this region (SSM {parameter}, "
            f"images named {pattern!r}); pass --ami-id"
        )
    newest = max(images, key=lambda image: image["CreationDate"])
    return str(newest["ImageId"]), f"describe_images {newest['Name']!r}"
