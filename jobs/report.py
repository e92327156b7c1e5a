"""`python -m jobs.report ...`: the report job as a cluster runs it (same arguments as `augmix report`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
