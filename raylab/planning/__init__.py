"""Planning a sweep, before anything runs: a sweep file read and resolved into trials (`sweep`,
`trials`), `grid:` and `search:` axes (`space`), each trial's identity (`trials.config_hash`), where
results live (`storage`) and the pre-flight checks of storage and data (`preflight`). It may import
`spec`, `cells`, `tasks`, `networks` and `training`; no Ray.
"""
