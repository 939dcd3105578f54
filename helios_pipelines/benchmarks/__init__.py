"""Benchmarks that compare Helios with what its users already have, on any CSV."""
