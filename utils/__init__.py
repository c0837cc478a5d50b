"""Glue around TRL: data, models, rewards, and the trainers TRL lacks."""
