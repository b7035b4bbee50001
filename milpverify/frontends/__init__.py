"""Front ends that turn ONNX models and torch modules into a `Network`."""
