"""Using a final model: ``prediction`` (predict-new, evaluate-prediction), ``export`` (the checked ONNX export)
and ``serving`` (the HTTP runtime)."""
