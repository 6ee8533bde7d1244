"""luigid, Luigi's central scheduler, as the deployment runs it: `python -m scheduler`."""
