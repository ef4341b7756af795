"""Import kserve without letting it read our command line: kserve.model_server parses sys.argv
when imported. Import this module before any `from kserve... import ...`."""

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
finally:
    sys.argv = _argv

__all__ = ["kserve"]
