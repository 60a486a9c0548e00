"""Model monitoring (issue 13): reference profiles of the data each version learned from
(:mod:`.reference`), and the drift statistics that compare live traffic with them
(:mod:`.drift`). Pure code, no I/O but the MLflow helper that logs a profile."""
