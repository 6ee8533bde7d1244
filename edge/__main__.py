"""`python -m edge` runs the edge (edge.app); `python -m edge status` prints its state."""

import sys

if sys.argv[1:] == ["status"]:
    from edge.status import main as status

    sys.exit(status())
elif sys.argv[1:]:
    sys.exit(f"usage: python -m edge [status]; got {' '.join(sys.argv[1:])!r}")

from edge.app import main

main()
