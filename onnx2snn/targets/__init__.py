"""The arithmetic of target chips: register widths and per-step neuron equations, one module per
target whose neuron is not the float time-step contract itself (``loihi2``: Loihi 2 fixed point).

Which module holds each target neuron's arithmetic is recorded by its profile,
``onnx2snn.convert.profiles.NeuronProfile.arithmetic``.
"""
