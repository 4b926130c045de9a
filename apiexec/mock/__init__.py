"""mock layer."""
