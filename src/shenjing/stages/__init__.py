"""stages layer of shenjing."""
