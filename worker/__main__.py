from worker.cli.entry import main

raise SystemExit(main())
