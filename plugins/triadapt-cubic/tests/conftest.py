pytest_plugins = ["triadapt.testing"]
