"""Many databases in one rollout: a manifest of targets, waves with a canary, limits and a failure budget."""
