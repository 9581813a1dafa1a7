"""chorus.engine."""
