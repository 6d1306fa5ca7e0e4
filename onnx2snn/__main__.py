"""Lets ``python -m onnx2snn`` run the command-line interface."""

from onnx2snn.cli.main import main

if __name__ == "__main__":
    main()
