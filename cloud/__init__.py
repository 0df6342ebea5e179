"""dlcloud: launch AWS Deep Learning AMI GPU instances safely, and leave nothing billing."""

__version__ = "0.1.0"
