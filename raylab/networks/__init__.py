"""The networks: the model around a cell (`model`), hidden sizes for a parameter budget
(`budget`), optimizer groups from the cells' parameter tags (`optim`) and the IndRNN lr schedules
(`schedules`). It may import `spec`, `cells` and `tasks`; no Ray.
"""
