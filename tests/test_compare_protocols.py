"""A --compare table never sets one protocol beside another protocol's numbers without saying so."""

from __future__ import annotations

import pandas as pd
import pytest

from raylab.cli import main
from raylab.results.published import load_published, paper_table, protocol_legend, shipped_tables
from raylab.results.collect import ResultsError

MNIST = pd.DataFrame(
    [{"status": "finished", "experiment": "indrnn-mnist", "variant": "IndRNN (6 layers)", "config.task.permute": p, "final/test/acc": a} for p, a in ((False, 0.99), (False, 0.98), (True, 0.96), (True, 0.95))]
)


def test_indrnn_mnist_is_compared_with_the_pytorch_protocols_numbers():
    table = paper_table(MNIST, load_published("indrnn-mnist")).set_index("model")
    ours = table.loc["IndRNN (6 layers)"]
    assert ours["protocol"] == "pytorch" and ours["psMNIST (paper)"] == "4.36"  # the authors' PyTorch log
    assert ours["psMNIST Δ/SE"] == "+0.3"  # (4.5 - 4.36) / 0.5
    cvpr = table.loc["IndRNN (6 layers), CVPR"]
    assert cvpr["protocol"] == "theano" and cvpr["psMNIST (paper)"] == "4" and cvpr["psMNIST"] == "—"
    assert table.loc["LSTM", "protocol"] == "cited" and table.loc["LSTM", "psMNIST Δ/SE"] == "other protocol"


def test_rows_of_another_protocol_get_no_difference_even_when_they_select_our_runs(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "title: t\nmetric: test/acc\nscale: -100.0\noffset: 100.0\n"
        "protocols: {a: protocol A, b: protocol B}\nours: a\nprotocol: a\n"
        "columns: [{label: ps, where: {config.task.permute: true}}]\n"
        "rows:\n  - {label: same, where: {variant: IndRNN (6 layers)}, values: [[4.0]]}\n"
        "  - {label: other, protocol: b, where: {variant: IndRNN (6 layers)}, values: [[4.0]]}\n"
    )
    table = paper_table(MNIST, load_published(path)).set_index("model")
    assert table.loc["same", "ps Δ/SE"] == "+1.0" and table.loc["other", "ps Δ/SE"] == "other protocol"
    assert table.loc["other", "ps"] == table.loc["same", "ps"]  # ours are shown, only the difference is withheld
    assert protocol_legend(load_published(path)) == ["Ours: a (protocol A).", "b: protocol B (no difference computed: other protocol)"]


def test_one_protocol_needs_no_protocol_column():
    trials = pd.DataFrame([{"status": "finished", "experiment": "nnrnn-ptb-150-params", "variant": "nnRNN", "final/test/bpc": 1.41}])
    table = paper_table(trials, load_published("nnrnn-ptb-bpc"))
    assert "protocol" not in table.columns
    supplement = paper_table(trials.assign(**{"final/test/acc": 0.69}), load_published("nnrnn-ptb-acc-supplement")).set_index("model")
    assert supplement.loc["nnRNN", "protocol"] == "supplement"  # the jobs follow the README's hyperparameters
    assert supplement.loc["nnRNN", "~1.32M params, T=150 Δ/SE"] == "other protocol"


def test_a_table_that_states_no_protocol_says_so(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text("title: t\nmetric: test/acc\ncolumns: [{label: ps, where: {config.task.permute: true}}]\nrows: [{label: IndRNN (6 layers), values: [[0.9]]}]\n")
    table = paper_table(MNIST, load_published(path)).set_index("model")
    assert table.loc["IndRNN (6 layers)", "protocol"] == "not stated"
    assert "does not say which protocol" in protocol_legend(load_published(path))[0]


def test_unknown_protocol_keys_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("title: t\nmetric: test/acc\nprotocols: {a: A}\nours: a\ncolumns: [{label: all}]\nrows: [{label: x, protocol: c, values: [[1]]}]\n")
    with pytest.raises(ResultsError, match="row 'x': protocol 'c' is not one of the table's protocols \\(a\\)"):
        load_published(path)


@pytest.mark.parametrize("name", shipped_tables())
def test_every_shipped_table_states_its_protocols(name):
    table = load_published(name)
    assert table.ours is not None
    assert all(row.protocol is not None for row in table.rows), name


def test_the_table_command_prints_the_legend(tmp_path, capsys):
    folder = tmp_path / "indrnn-mnist"
    folder.mkdir()
    MNIST.drop(columns="experiment").to_parquet(folder / "trials.parquet")
    assert main(["table", str(folder), "--compare", "indrnn-mnist"]) == 0
    out = capsys.readouterr().out
    assert "Ours: pytorch (the authors' PyTorch code" in out and "theano: the authors' Theano code" in out
