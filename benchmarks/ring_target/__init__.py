"""Where a ring flow map's K-step error is made: per-sample errors and a scan across a mode boundary."""
