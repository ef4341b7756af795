"""Plain, typed, unit-tested functions behind the pipeline's KFP components and the server."""
