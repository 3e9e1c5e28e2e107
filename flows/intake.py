"""Alert intake: fingerprints, de-duplication and correlation into incidents (in progress)."""
