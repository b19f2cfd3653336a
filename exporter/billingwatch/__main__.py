from billingwatch.cli import main

raise SystemExit(main())
