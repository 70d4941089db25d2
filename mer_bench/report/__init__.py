"""Reports: tables, plots, leaderboards."""
