"""Results: experiment folders collected into Parquet (`collect`), one configuration per row
(`identity`), mean +- standard error tables (`aggregate`), `--vs` comparisons (`compare`), promotion
of the best configuration (`promote`), learning-curve figures (`plots`), the papers' published tables
(`published`) and provenance (`provenance`). It reads what Tune wrote without importing Ray, and may
import every layer up to `planning`.
"""
