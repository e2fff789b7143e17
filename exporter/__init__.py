"""lookout-exporter: Prometheus metrics for supervisord processes (see issue 3)."""
