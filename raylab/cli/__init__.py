"""The command line, the top layer: one module per command group (`run`: validate, run, resume;
`results`: collect, table, plot, best; `cluster`: submit, status, logs; `listing`: ls), the parser
and exit codes in `main` and `common`. It may import every layer below; a command imports the layers
it needs when it runs, so that `raylab --help`, `ls` or `status` stay light.
"""

from raylab.cli.main import console, main, parser

__all__ = ["console", "main", "parser"]
