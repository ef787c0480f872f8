"""Teacher runs: Analyzer / Informant / Reasoner / DRD supervision from a teacher model or gold data."""
