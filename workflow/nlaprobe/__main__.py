from nlaprobe.cli import main

# The guard matters: vLLM's engine core starts in a spawned process, which re-imports the main
# module; without it the child would run the whole command again.
if __name__ == "__main__":
    raise SystemExit(main())
