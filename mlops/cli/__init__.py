"""The command line: ``root`` (the Typer app, global options, errors to exit codes), one module per command
group (``lifecycle``, ``experiments``, ``deploy``, ``data``, ``tune``), the shared ``options`` and ``console``.

Heavy libraries (pandas, scikit-learn, torch, transformers, scipy) are imported inside the commands, so
``cli --help`` and ``predict-new --text`` start fast.
"""
