"""Thin typer command wrappers: each parses options, calls one library function, prints the result."""
