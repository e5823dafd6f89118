"""Provenance on a cluster: the job's working_dir has no .git and raylab is not installed there."""

from __future__ import annotations

from raylab.results import provenance


def test_a_job_driver_without_git_records_the_commit_that_submit_passed(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.GIT_COMMIT_VARIABLE, raising=False)
    assert provenance.git_commit(tmp_path) is None
    monkeypatch.setenv(provenance.GIT_COMMIT_VARIABLE, "0123abcd+dirty")
    assert provenance.git_commit(tmp_path) == "0123abcd+dirty"


def test_a_checkout_records_its_own_commit_over_the_variable(monkeypatch):
    monkeypatch.setenv(provenance.GIT_COMMIT_VARIABLE, "not-this-one")
    commit = provenance.git_commit(provenance.Path(provenance.__file__).parent)
    assert commit and not commit.startswith("not-this-one")


def test_raylab_version_is_recorded_even_when_not_installed():
    assert provenance.package_versions()["raylab"]
