"""The feedback app: people upload photos, see the classifier's prediction, confirm or correct it,
and the photos they validated become training data (see docs/feedback.md)."""
