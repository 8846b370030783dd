"""``python -m irm_lens.cli``: the same as the ``irm-lens`` command."""

import sys

from irm_lens.cli.main import main

sys.exit(main())
