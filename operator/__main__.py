"""`python -m chorus.operator`: run the operator with Settings from the environment (CHORUS_OPERATOR_*)."""

import sys

from chorus.operator.runner import run
from chorus.operator.settings import Settings

if __name__ == "__main__":
    sys.exit(run(Settings()))
