"""Objectax data."""
