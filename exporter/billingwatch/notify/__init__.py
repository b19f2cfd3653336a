"""Pushed notifications: live anomalies posted to Alertmanager as they are found (alertmanager.py)."""
