"""Evaluating what training bought: the plan and run, the two sides, statistics, the report and plots."""
