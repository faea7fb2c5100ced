"""maw-gym."""
