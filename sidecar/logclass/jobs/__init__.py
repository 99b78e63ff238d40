"""Batch jobs below the front ends: the CSV row rules, the chunk pipeline, classifying a CSV and
reporting on the result. The CLI, HTTP uploads and `logclass evaluate` run these."""
