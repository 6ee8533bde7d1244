"""`python -m edge`: see edge.app."""

from edge.app import main

main()
