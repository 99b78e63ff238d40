"""Offline front ends on the engine: classifying a CSV and reporting on the result."""
