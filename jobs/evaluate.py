"""`python -m jobs.evaluate ...`: the evaluate job as a cluster runs it (same arguments as `augmix evaluate`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
