"""Speed and device-readiness measurements run from a checkout (not installed)."""
