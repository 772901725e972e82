"""analysis layer of shenjing."""
