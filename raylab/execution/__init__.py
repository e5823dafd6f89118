"""The Ray layer, the only one that imports Ray: Ray started or attached (`raystart`, `quiet`),
a sweep turned into a Tuner (`runner`), the one trainable (`trainable`), search and schedulers
(`search`), re-run planning (`rerun`, `preview`), MLflow and W&B (`trackers`), one driver per sweep folder (`lease`), live output (`live`) and Ray Jobs (`submit`). It may
import every layer below the command line.
"""
