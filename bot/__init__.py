"""Recap's Discord app, its configuration and its command lines."""
