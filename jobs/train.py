"""`python -m jobs.train ...`: the train job as a cluster runs it (same arguments as `augmix train`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
