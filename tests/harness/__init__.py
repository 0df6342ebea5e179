"""Fault injection for tests: what slow networks and eventually consistent APIs do, on demand."""
