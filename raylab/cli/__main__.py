"""`python -m raylab.cli ...`: the `raylab` command (Ray Jobs run it this way on a cluster)."""

from raylab.cli.main import console

console()
