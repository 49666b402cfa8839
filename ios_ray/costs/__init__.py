"""Stage costs: measurement records, the cost-source protocol, the analytic model and the Arrow table."""
