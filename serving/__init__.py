"""chorus.serving."""
