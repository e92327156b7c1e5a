"""`python -m jobs.train --config FILE [--set k=v ...] [--out URI]`: training as a cluster runs it
(the same arguments and errors as `augmix train`)."""
import os
import sys

from orchestrator.cli import main
from orchestrator.ray_session import pin_local_environment

if __name__ == "__main__":
    if "--address" not in sys.argv and not os.environ.get("RAY_ADDRESS"):
        pin_local_environment()  # a local cluster stays on 127.0.0.1: Ray reads this when first imported
    sys.exit(main(["train", *sys.argv[1:]]))
