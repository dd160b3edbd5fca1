from fedem.cli import main

raise SystemExit(main())
