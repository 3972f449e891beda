"""Objectax objectives."""
