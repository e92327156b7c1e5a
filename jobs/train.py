"""`python -m jobs.train --config FILE [--set k=v ...] [--out URI]`: training as a cluster runs it
(the same arguments and errors as `augmix train`)."""
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
