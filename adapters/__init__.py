"""chorus.adapters."""
