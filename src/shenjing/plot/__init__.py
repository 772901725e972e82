"""plot layer of shenjing."""
