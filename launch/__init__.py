"""Objectax launch."""
