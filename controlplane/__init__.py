"""chorus.controlplane."""
