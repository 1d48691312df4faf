def main() -> None:
    """pulse agent entry point (placeholder)."""
