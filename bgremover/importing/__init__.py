"""Native checkpoints from ONNX exports (`rmbg import`): the trained weights read out of the graph.

Needs the `onnx` package (`pip install 'bgremover[import]'`), imported only when a file is read.
"""
