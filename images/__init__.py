"""Chorus container images built from Debian packages and the locked Python dependencies, no registry needed."""
