"""A researcher's own cell and task, outside raylab: named in sweep files by import path (`mylab.cells:GatedIndRNN`)."""
