"""label_issues: training photos whose label may be wrong (cleanlab on out-of-fold probabilities),
near-duplicate pairs and outliers, from the features the train step's frozen phase computed."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def label_issues(
    features: Input[Dataset],
    ingested: Input[Dataset],
    seed: int,
    report: Output[HTML],
    suspects: Output[Artifact],
):
    """Rank the train and validation photos by how likely their label is wrong; list near duplicates
    and outliers. suspects: the JSON list (catdog.label_issues: one entry per photo, keyed by sha256);
    report: the page with each suspect's thumbnail, given label, out-of-sample probability and reason."""
    import json
    from pathlib import Path

    from catdog.label_issues import from_artifacts

    entries, page, summary = from_artifacts(Path(features.path), Path(ingested.path), seed)
    Path(suspects.path).write_text(json.dumps(entries, indent=1))
    Path(report.path).write_text(page)
    suspects.metadata.update({k: v for k, v in summary.items() if k != "seconds"})
    print(f"{summary['n_photos']} photos: {summary['label_issues']} labels that may be wrong, "
          f"{summary['duplicate_pairs']} near-duplicate pairs, {summary['outliers']} outliers; {summary['seconds']} s")
