"""`make retrain-if-needed`: start a retraining run when enough photos were validated (for cron).

    python -m feedback.retraining.cron [--if-needed] [--database-url URL] [--feedback-uri DIR] [KEY=value ...]

Uses the app's settings (DATABASE_URL, FEEDBACK_URI, RETRAIN_MIN_NEW, RUNS_DIR, ...) and the same
KEY=value words as `make app`. --if-needed starts a run only when RETRAIN_MIN_NEW photos were
validated since the last run; without it, a run starts now. Prints the run's id and exits 0;
exits 0 without starting when not needed or when a run is active (its id printed), 2 on bad
settings, 1 when the run could not start. A local run goes on in its own process after this exits;
the app watches it (or the next app start reconciles it).
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedback.retraining.cron", description=__doc__.split("\n\n")[0])
    parser.add_argument("--if-needed", action="store_true", help="only when RETRAIN_MIN_NEW photos are new")
    parser.add_argument("--database-url")
    parser.add_argument("--feedback-uri")
    parser.add_argument("training", nargs="*", metavar="KEY=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    from feedback.store.db import migrate, open_database
    from feedback.retraining.config import parse_training_words
    from feedback.retraining.launchers.base import LaunchError
    from feedback.retraining.runs import RunConflict, RunService
    from feedback.retraining.launchers import default_launchers
    from feedback.settings import SettingsError, load_settings
    from pipelines.config import ConfigError

    try:
        settings = load_settings(database_url=args.database_url, feedback_uri=args.feedback_uri)
        training = parse_training_words(args.training, settings.feedback_uri)
    except (SettingsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = open_database(settings.database_url)
    try:
        migrate(db)
        runs = RunService(settings, db, training, default_launchers(settings, training))
        runs.refresh()
        if args.if_needed:
            new = runs.new_validated_photos()
            if not settings.retrain_min_new or new < settings.retrain_min_new:
                print(f"not needed: {new} photo(s) validated since the last run, threshold "
                      f"RETRAIN_MIN_NEW={settings.retrain_min_new}")
                return 0
        try:
            run = runs.start_run(trigger="automatic" if args.if_needed else "manual")
        except RunConflict as exc:
            print(f"not started: {exc}")
            return 0
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except LaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"started run {run.id} on {run.target} ({run.validated_photos} validated photos, "
              f"{run.new_validated_photos} new)")
        return 0
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
