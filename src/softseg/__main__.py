"""``python -m softseg`` (also what ``torchrun -m softseg train ...`` runs)."""

from softseg.cli import main

raise SystemExit(main())
