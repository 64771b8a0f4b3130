"""Observability: the service's Prometheus metrics and the model signals behind them."""
