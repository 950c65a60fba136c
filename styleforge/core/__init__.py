"""Foundation: params schema, errors, atomic io, image reading, downloads, grids, reports.

Imports nothing else of styleforge: model, tasks, flows and the application build on it.
"""
