"""The app's retraining: runs (runs.py: start one at a time, watch, stop, retrain automatically),
where they go (config.py: `make run`'s words per target), how they start on each target
(launchers/), and the cron entry `python -m feedback.retraining.cron` (`make retrain-if-needed`)."""
