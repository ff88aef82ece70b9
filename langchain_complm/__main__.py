"""``python -m langchain_complm`` runs the ``complm`` command line."""

from langchain_complm.cli import main

raise SystemExit(main())
