"""``python -m triton_mlx``: see ``triton_mlx.cli``."""

import sys

from triton_mlx.cli import main

sys.exit(main())
