"""``IFSubtract``: Lava's LIF with reset by subtraction (v −= vth where it spikes).

Simulation only: the stock Loihi 2 neuron programs reset to zero, so this process has CPU models
(``fixed_pt`` bit-accurate like ``PyLifModelBitAcc``, and ``floating_pt``) and no chip model.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIF


class IFSubtract(LIF):
    """An integrate-and-fire population (use du=4095, dv=0) that resets by subtraction."""


@implements(proc=IFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyIFSubtractModelFloat(AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)

    def spiking_activation(self):
        return self.v > self.vth

    def reset_voltage(self, spike_vector):
        self.v[spike_vector] -= self.vth


@implements(proc=IFSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyIFSubtractModelBitAcc(AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def reset_voltage(self, spike_vector):
        self.v[spike_vector] -= self.effective_vth
