"""The HTTP client of the predictor (KServe V1 or a Vertex AI endpoint) and its /metrics scraper."""
