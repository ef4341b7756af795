"""Operators' artifacts generated from code (not shipped in any image): see ops/monitoring_manifests.py."""
