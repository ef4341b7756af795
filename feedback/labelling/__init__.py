"""Labelling: the service of predictions and verdicts, labelled uploads, and the dataset publisher."""
