"""`python -m jobs.sweep ...`: the sweep job as a cluster runs it (same arguments as `augmix sweep`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
