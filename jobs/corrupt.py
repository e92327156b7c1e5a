"""`python -m jobs.corrupt ...`: the corrupt job as a cluster runs it (same arguments as `augmix corrupt`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["corrupt", *sys.argv[1:]]))
