"""Getting a student out: ONNX and safetensors export checked with onnxruntime (export), int8 and pruning (compress), TensorBoard curves (tensorboard)."""
