"""`cli report`: plots and fold-paired statistics of an experiment (entry point: ``writer.write_report``).

matplotlib is imported only by ``mlops.core.plots``, which only this command loads.
"""
