"""Tune's basic search algorithm for raylab's grid of resolved trials, in time linear in the trials.

A run's param space is `{"trial": grid_search(resolved trials), "runtime": ...}` (and `"sample"` for a
search: raylab.execution.search). Tune's variant generator deep-copies the whole unresolved space for
every grid value, the list of N trial dicts included, and builds every trial of a sample before the
first can start: O(N^2), about 50 s before the first of 1,000 trials ran (docs/throughput.md).
`TrialGridGenerator` is Tune's BasicVariantGenerator with one change: each trial's variants come
from a space holding that trial alone (`grid_variants`), so a trial costs the same at any N. The draws
of a search are Tune's own, in the same order: for each of `num_samples` samples, for each trial in
the grid, the space's domains are resolved once, as before.

It builds on `_TrialIterator` and `_VariantIterator`, private classes of Tune's basic_variant module;
pyproject pins Ray to the 2.60 series, and tests/test_trial_grid.py fails if they move.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

from ray.tune.search.basic_variant import SERIALIZATION_THRESHOLD, BasicVariantGenerator, _TrialIterator, _VariantIterator
from ray.tune.search.variant_generator import _count_spec_samples, _count_variants, generate_variants

GRID_PATH = ("config", "trial")


def grid_variants(spec: dict, random_state: Any) -> Iterator[tuple[dict, dict]]:
    """What `generate_variants(spec)` yields for a space whose `trial` entry is a grid of trial dicts,
    one trial at a time: the space is copied with that trial in place of the grid."""
    grid = spec["config"]["trial"]["grid_search"]
    for trial in grid:
        one = {**spec, "config": {**spec["config"], "trial": trial}}
        for resolved_vars, variant in generate_variants(one, random_state=random_state):
            yield {**resolved_vars, GRID_PATH: variant["config"]["trial"]}, variant


class TrialGridIterator(_TrialIterator):
    def __next__(self) -> Any:
        if self.variants and self.variants.has_next():
            resolved_vars, spec = next(self.variants)
            return self.create_trial(resolved_vars, spec)
        if self.num_samples_left > 0:
            self.variants = _VariantIterator(grid_variants(self.unresolved_spec, self.random_state), lazy_eval=self.lazy_eval)
            self.num_samples_left -= 1
            resolved_vars, spec = next(self.variants)
            return self.create_trial(resolved_vars, spec)
        raise StopIteration


class TrialGridGenerator(BasicVariantGenerator):
    """BasicVariantGenerator over raylab's grid of trials (no `points_to_evaluate`, no constant grid)."""

    def add_configurations(self, experiments: Any) -> None:
        from ray.tune.experiment import _convert_to_experiment_list  # lazily, as BasicVariantGenerator imports it (an import cycle inside Tune)

        for experiment in _convert_to_experiment_list(experiments):
            lazy_eval = _count_spec_samples(experiment.spec, num_samples=1) > SERIALIZATION_THRESHOLD
            previous_samples = self._total_samples
            self._total_samples += _count_variants(experiment.spec, [])
            iterator = TrialGridIterator(
                uuid_prefix=self._uuid_prefix,
                num_samples=experiment.spec.get("num_samples", 1),
                unresolved_spec=experiment.spec,
                lazy_eval=lazy_eval,
                start=previous_samples,
                random_state=self._random_state,
            )
            self._iterators.append(iterator)
            self._trial_generator = itertools.chain(self._trial_generator, iterator)
