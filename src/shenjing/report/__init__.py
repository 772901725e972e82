"""report layer of shenjing."""
