"""Measurement: the bench profile and report, overhead sampling and verdicts, planning."""
