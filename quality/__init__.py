"""chorus.quality."""
