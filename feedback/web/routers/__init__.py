"""The app's routes, one module per resource: predictions, uploads, status, pages."""
