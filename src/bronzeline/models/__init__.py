"""Models: silver/gold relations built in the warehouse from plain SQL, in dependency order, gated by
data checks (write–audit–publish)."""
