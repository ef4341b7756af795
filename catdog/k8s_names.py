"""Kubernetes and KServe name rules, shared by the pipeline's parameter check (pipelines/config.py)
and the KServe deploy (catdog/deploy/kserve.py) without importing the deploy code."""

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # Kubernetes object names and namespaces (DNS-1123)
MAX_SERVICE_NAME = 45  # KServe derives longer host and revision names from an InferenceService's name
