"""The page: upload (/), the review queue (/review), the history (/history), card fragments, and
the API page (/docs).

Server-rendered Jinja2 templates (autoescaped) with one small script, feedback/web/static/app.js;
every asset is served by the app itself. /docs is Swagger UI 5 (it reads FastAPI's OpenAPI 3.1;
its files come from the fastapi-offline package, mounted at /docs-assets by feedback.web.app) started
by feedback/web/static/docs.js, so it carries the app's Content-Security-Policy like every page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from feedback.labelling.service import FeedbackService
from feedback.settings import ReviewOrder
from feedback.store.tables import NAME_LENGTH, NEITHER, Status
from feedback.web.deps import get_service
from feedback.web.schemas import MAX_OFFSET

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
router = APIRouter(include_in_schema=False)
PAGE_SIZE = 24
ORDER_WORDS = {"least_confident": "least confident first", "random": "in random order",
               "ood_first": "those the model flagged as neither a cat nor a dog first", "newest": "newest first",
               "diverse": "least confident, spread over what the photos show",
               "training_suspects_first": "training photos whose label may be wrong first"}
ORDER_LINKS = {"least_confident": "least confident", "random": "random", "ood_first": "out of distribution",
               "newest": "newest", "diverse": "diverse", "training_suspects_first": "training suspects"}


def render(request: Request, name: str, service: FeedbackService, **context) -> HTMLResponse:
    if "queue_length" not in context:
        context["queue_length"] = service.queue_length()
    return TEMPLATES.TemplateResponse(request, name, {
        "labels": service.labels,
        "predictor": service.predictor_status(),
        "auth_required": service.settings.auth_required,
        "neither": NEITHER,
        **context,
    })


@router.get("/", response_class=HTMLResponse)
def upload_page(request: Request, service: FeedbackService = Depends(get_service)):
    return render(request, "upload.html", service, page="upload")


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, order: ReviewOrder | None = None, seed: int | None = Query(None, ge=0, le=2**31 - 1),
                queue: Literal["review", "second-opinion"] = "review", by: str = Query("", max_length=NAME_LENGTH),
                service: FeedbackService = Depends(get_service)):
    """The queue in `order` (none: the REVIEW_ORDER setting); its reload link keeps an order given here.
    queue=second-opinion: the photos reviewer `by` (the page adds the name it remembers) has not judged
    that need another opinion (FeedbackService.second_opinion)."""
    if queue == "second-opinion":
        page = service.second_opinion(PAGE_SIZE, by or None)
        return render(request, "review.html", service, page="review", queue="second-opinion", by=by.strip(),
                      predictions=page.predictions, second_opinion_length=page.length,
                      threshold=service.settings.second_opinion_confidence)
    page = service.review_queue(PAGE_SIZE, order, seed)
    return render(request, "review.html", service, page="review", queue="review", predictions=page.predictions,
                  queue_length=page.length, order=page.order, order_given=order,
                  order_words=ORDER_WORDS[page.order], orders=ORDER_LINKS)


@router.get("/history", response_class=HTMLResponse)
def history_page(
    request: Request,
    status: Status | Literal[""] = "",
    model_version: str = "",
    flagged: Literal["", "true", "false"] = "",
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    service: FeedbackService = Depends(get_service),
):
    rows = service.list_predictions(status or None, model_version or None, limit=PAGE_SIZE + 1, offset=offset,
                                    flagged=None if not flagged else flagged == "true")
    versions = service.model_versions()
    return render(request, "history.html", service, page="history", predictions=rows[:PAGE_SIZE],
                   more=len(rows) > PAGE_SIZE, status=status, model_version=model_version, versions=versions,
                   flagged=flagged, offset=offset, page_size=PAGE_SIZE)


@router.get("/cards/{prediction_id}", response_class=HTMLResponse)
def card(request: Request, prediction_id: str, service: FeedbackService = Depends(get_service)):
    """One prediction's card: the page inserts it after an upload or a verdict."""
    return TEMPLATES.TemplateResponse(request, "_card.html", {"p": service.get(prediction_id), "labels": service.labels,
                                                              "neither": NEITHER})


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request):
    """Swagger UI over /openapi.json: every route, with "Try it out"."""
    return TEMPLATES.TemplateResponse(request, "docs.html", {
        "title": f"{request.app.title} API", "openapi_url": request.app.openapi_url})
