"""chorus.operator: the VoiceTenant CRD and the kopf operator that isolates each tenant (see README.md)."""
