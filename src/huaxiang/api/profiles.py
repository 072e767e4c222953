"""Routes: profiles (being built)."""

from fastapi import APIRouter

router = APIRouter()
