"""Cross-cutting concerns. Nothing here imports a product area."""
