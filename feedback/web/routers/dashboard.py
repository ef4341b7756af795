"""The monitoring dashboard: /dashboard (the page), GET /api/dashboard (the numbers it draws),
GET /api/trends?window=1h|1d (the predictor's and the app's trends over time), plotly.js.

plotly.js is the `plotly` package's copy, served here with a long cache lifetime (never a CDN).
The page's CSP (style-src 'self') forbids the <style> elements plotly.js adds when it loads; the
page gives it what it looks for first (feedback/web/templates/dashboard.html): a <link> with id
`plotly.js-style-global` (plotly then inserts its rules into that same-origin stylesheet through
the CSSOM, which the CSP allows), and an element with the id of each other style block it would
inject at load (map styles this page never uses), found in the bundle by PLOTLY_STYLE_GUARD.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Literal

import plotly
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from feedback.labelling.service import FeedbackService
from feedback.monitoring import agreement, dashboard
from feedback.predictor_client.metrics import PredictorMetrics
from feedback.web.deps import get_service
from feedback.web.routers.pages import render
from feedback.web.routers.runs import server_folders, shorten_paths

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
PLOTLY_URL = f"/static-vendor/plotly-{plotly.__version__}.min.js"  # a new package version, a new URL
PLOTLY_STYLE_GUARD = re.compile(r'getElementById\("([\w-]+)"\)\)\{var \w+=document\.createElement\("style"\)')
router = APIRouter()
_scraper_lock = threading.Lock()


@functools.cache
def plotly_style_ids() -> tuple[str, ...]:
    """Ids of the <style> elements plotly.js creates at load unless an element with that id exists."""
    return tuple(dict.fromkeys(PLOTLY_STYLE_GUARD.findall(PLOTLY_JS.read_text(encoding="utf-8"))))


def predictor_metrics(request: Request, service: FeedbackService) -> PredictorMetrics:
    """The app's one scraper: it keeps the previous scrape for the request rate."""
    with _scraper_lock:
        scraper = getattr(request.app.state, "predictor_metrics", None)
        if scraper is None:
            scraper = request.app.state.predictor_metrics = PredictorMetrics(service.settings)
    return scraper


@router.get("/static-vendor/plotly-{version}.min.js", include_in_schema=False)
def plotly_js(version: str) -> FileResponse:
    if version != plotly.__version__:
        raise HTTPException(404, f"this app serves plotly.js of plotly {plotly.__version__}")
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page(request: Request, service: FeedbackService = Depends(get_service)):
    choices = {"days": dashboard.DAYS, "bins": dashboard.CONFIDENCE_BINS, "recent_limit": dashboard.RECENT_LIMIT,
               "drift_p": dashboard.DRIFT_P, "drift_min_n": dashboard.DRIFT_MIN_N,
               "alpha_min_photos": agreement.ALPHA_MIN_PHOTOS}
    return render(request, "dashboard.html", service, page="dashboard", targets=list(service.training.targets),
                   choices=choices, plotly_url=PLOTLY_URL, plotly_style_ids=plotly_style_ids())


@router.get("/api/dashboard", tags=["dashboard"], summary="The monitoring dashboard's numbers")
def dashboard_data(request: Request, service: FeedbackService = Depends(get_service)) -> dict:
    """The champion and every registry version (metrics, confusion matrix, decision), predictions
    per day, accuracy on people's verdicts per model version (Wilson 95 % interval; "neither" verdicts
    left out), the shares flagged as neither by the model and called neither by people (`neither`), confidence
    histogram of confirmed vs corrected predictions, predicted-class balance, the drift test and
    the predictor's latency and request rate, and the agreement between reviewers (`agreement`: Krippendorff's
    alpha, percent agreement, each reviewer's agreement with the consensus, contested and unresolved photos;
    feedback/monitoring/agreement.py) (feedback/monitoring/dashboard.py, feedback/predictor_client/metrics.py)."""
    data = service.dashboard()
    folders = server_folders(service)  # no absolute server path in an answer anyone may read
    data["registry"] = {key: shorten_paths(value, folders) if isinstance(value, str) else value
                        for key, value in data["registry"].items()}
    data["predictor"] = predictor_metrics(request, service).read()
    return data


@router.get("/api/trends", tags=["dashboard"], summary="Request rate, error rate, latency and uptime over time")
def trends_data(window: Literal["1h", "1d"] = Query("1h", description="the last hour or day"),
                service: FeedbackService = Depends(get_service)) -> dict:
    """The predictor's and this app's request rate (per s), error ratio (5xx answers / answers), latency
    p50/p99 (s) and uptime (s) over the window: from Prometheus' recording rules when PROMETHEUS_URL is set
    (`source` "prometheus"), else from the app's own scrapes every TRENDS_INTERVAL_S (`source` "memory").
    A service whose numbers cannot be read (Prometheus or the predictor down) carries the reason in
    its `error`; the answer is still 200 (feedback/monitoring/trends.py)."""
    return service.trends_data(window)
