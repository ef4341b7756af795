"""ingest: validate every file of the source; keep the good ones; report the rest."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    data_uri: str,
    feedback_uri: str,
    label_from: str,
    label_map: str,
    min_image_side: int,
    max_image_pixels: int,
    dataset: Output[Dataset],
    report: Output[Markdown],
    report_json: Output[Artifact],
):
    """Validate images by content (format, size, bombs, duplicates); write a dataset report.

    label_from: folder (class sub-folders), kaggle or oxford_pet (labels in file names; catdog/labels.py).
    feedback_uri ('' = none): also the photos validated in the feedback app, under <feedback_uri>/dataset,
    and its label overrides of training photos (<feedback_uri>/label-overrides.json: relabel or leave out).
    """
    import json
    from pathlib import Path

    from catdog import ingest as lib

    result = lib.ingest_dataset(
        data_uri, Path(dataset.path), min_image_side, max_image_pixels, label_map=lib.parse_label_map(label_map),
        feedback_uri=feedback_uri, label_from=label_from,
    )
    summary = lib.build_report(result, data_uri, feedback_uri)
    Path(report.path).write_text(lib.report_markdown(summary))
    Path(report_json.path).write_text(json.dumps(summary, indent=1))
    dataset.metadata.update(
        {"n_images": summary["n_images"], "n_skipped": summary["n_skipped"],
         "class_counts": summary["class_counts"], "fingerprint": summary["fingerprint"],
         "n_feedback": summary["n_images_by_origin"]["feedback"]}
    )
    print(f"kept {summary['n_images']} images {summary['class_counts']}, skipped {summary['n_skipped']}")
    if feedback_uri:
        print(f"feedback {feedback_uri}: kept {summary['n_images_by_origin']['feedback']} "
              f"{summary['class_counts_by_origin']['feedback']}, skipped {summary['n_skipped_by_origin']['feedback']}")
    overrides = summary["overrides"]
    if overrides:
        print(f"label overrides {overrides['uri']}: {overrides['relabelled']} relabelled, {overrides['left_out']} left "
              f"out, {overrides['confirmed']} confirmed, {overrides['not_applied']} not applied, "
              f"{len(overrides['unmatched'])} matched no photo")
    for note in summary["notes"]:
        print(note)
    for skipped in summary["skipped"]:
        print(f"  skipped {skipped['source']}: {skipped['reason']}")
    lib.check_usable(result)
