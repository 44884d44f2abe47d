"""The experiment folder (``service``), one fold's training and scoring (``fold``), and the runner that walks
backtesting, the hold-out estimate and the final model through an executor."""
