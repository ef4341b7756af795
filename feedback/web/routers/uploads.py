"""/api/upload-data: labelled photos straight into the feedback dataset.

200 with the report (added, rejected with reasons) when at least one photo was added; 422 with
the same report as `detail` when none was: {"detail": {"message", "added": [], "rejected"}}.
Labels are normalised as the validation route's are (feedback.labelling.service.normalise_label); a label
(or a zip folder) "neither" records the photo as neither of the labels: it stays out of the dataset.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from feedback.labelling.inputs import LabelledFile, UploadReport, check_text, normalise_label
from feedback.labelling.service import FeedbackService
from feedback.labelling.uploads import pair_labels, read_zip
from feedback.web.deps import get_service, require_writer
from feedback.web.schemas import UploadOut

router = APIRouter(prefix="/api", tags=["dataset"])
MAX_FILES = 1000
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
            "files[]": {"type": "array", "items": {"type": "string", "format": "binary"},
                        "description": "photos (or one .zip of class folders)"},
            "labels[]": {"type": "array", "items": {"type": "string"},
                         "description": "one label per file, in order, or one for all; "
                                        "'neither': the photo is neither (kept out of the dataset)"},
            "archive": {"type": "string", "format": "binary", "description": "a .zip of class folders (cat/, dog/)"},
            "by": {"type": "string", "description": "who labelled them (required when the app has an APP_TOKEN)"},
        }}}},
    }
}


def _is_zip(upload: UploadFile, head: bytes) -> bool:
    return head.startswith(b"PK\x03\x04") or (upload.filename or "").lower().endswith(".zip")


@router.post("/upload-data", response_model=UploadOut, dependencies=[Depends(require_writer)],
             responses={422: {"description": "nothing was added: `detail.rejected` says why for each file"}},
             openapi_extra=UPLOAD_BODY, summary="Add labelled photos (files[] + labels[], or a zip) to the dataset")
async def upload_data(request: Request, service: FeedbackService = Depends(get_service)) -> UploadOut:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send multipart/form-data: files[] with labels[], or one zip (archive or files[])")
    settings = service.settings
    report = UploadReport()
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 8) as form:
        uploads = [f for f in [*form.getlist("files[]"), *form.getlist("files"), *form.getlist("archive")]
                   if isinstance(f, UploadFile)]
        labels = [normalise_label(str(v)) for v in [*form.getlist("labels[]"), *form.getlist("labels")]]
        by = check_text(str(form.get("by") or ""), "'by'").strip()[:100] or None
        if not uploads:
            raise HTTPException(400, "no files: send files[] (with labels[]) or an archive (.zip of class folders)")
        contents = [await u.read() for u in uploads]
        names = [u.filename or f"file {i + 1}" for i, u in enumerate(uploads)]
    if len(uploads) == 1 and not labels and _is_zip(uploads[0], contents[0][:4]):
        files = await run_in_threadpool(read_zip, contents[0], service.verdicts, service.label_map,
                                        settings.max_photo_bytes, settings.max_request_bytes, report)
    else:
        if not labels:
            raise HTTPException(422, "labels[] is missing: send one label per file (or one for all), "
                                     "or a single zip of class folders")
        for label in set(labels):
            service.check_label(label)  # an unknown label fails the whole request: nothing is stored
        files = [LabelledFile(n, c, label) for n, c, label in zip(names, contents, pair_labels(names, labels))]
    report = await run_in_threadpool(service.add_labelled, files, by, report)
    if not report.added:
        return JSONResponse({"detail": {"message": f"no photo was added ({len(report.rejected)} file(s) rejected: "
                                                   "the reasons are in 'rejected')", "added": [],
                                        "rejected": report.rejected}}, status_code=422)
    return UploadOut(added=report.added, rejected=report.rejected)
