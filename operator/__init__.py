"""chorus.operator."""
