// Python bindings; the same file serves the CPU build and the CUDA build.
#include <torch/csrc/utils/pybind.h>  // at::Tensor casters, lighter than torch/extension.h

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d, "upsample, pad, FIR filter, downsample (NCHW)");
  m.def("fused_bias_act", &fused_bias_act, "bias + leaky ReLU + gain + clamp, or its gradient");
  m.def("fused_bias_act_backward", &fused_bias_act_backward, "gradient of input and bias");
}
