"""Taskiq: the broker, the jobs (distribution, notifications, sweep) and the dispatchers."""
