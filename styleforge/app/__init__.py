"""The application: command line, demo, Prefect server, sample site. Nothing imports it."""
