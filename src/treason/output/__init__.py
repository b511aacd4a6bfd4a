"""Views of events: terminal report, JSON Lines, CSV; and safe output files."""
