"""`python -m jobs.run ...`: the run job as a cluster runs it (same arguments as `augmix run`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
