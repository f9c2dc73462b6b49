from nlaprobe.cli import main

raise SystemExit(main())
