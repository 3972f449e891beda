"""Objectax models."""
