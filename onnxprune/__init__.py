"""onnxprune: structured channel pruning of ONNX models."""
