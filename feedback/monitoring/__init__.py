"""Monitoring: the dashboard's statistics over the store, the registry and the predictor's metrics."""
