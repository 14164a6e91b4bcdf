"""The coordinator role (siège) and ``siege-ctl``. Depends on ``node``; nothing here yet."""
