"""The contracts edge, gateway and pipeline share (design.md sections 1, 2 and 7)."""
