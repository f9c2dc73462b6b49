import logging
import os
import sys

from nlaprobe.cli import main

# The guard matters: vLLM's engine core starts in a spawned process, which re-imports the main
# module; without it the child would run the whole command again.
if __name__ == "__main__":
    code = main()
    if "corpus" in sys.argv[1:4]:  # the subcommand, after --threads N if given
        # The corpus stage (the `datasets` path) has been seen to abort at interpreter shutdown
        # ("terminate called without an active exception") after its shard was written and
        # renamed; its work is done and flushed, so it leaves without running C++ destructors.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code or 0))
    raise SystemExit(code)
