"""The result document, its schema and what a run costs."""
