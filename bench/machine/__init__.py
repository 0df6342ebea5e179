"""Judging the machine: NVML, telemetry, GPU fingerprint, host facts, EC2 metadata, verify."""
