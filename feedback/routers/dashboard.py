"""/dashboard and /api/dashboard (being written)."""

from fastapi import APIRouter

router = APIRouter()
