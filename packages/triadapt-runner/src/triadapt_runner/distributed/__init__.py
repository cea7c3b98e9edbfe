"""Process groups, accelerate / DeepSpeed set-up and launching."""
