// Declarations shared by the CPU and CUDA builds of the styleforge ops.
// Both builds expose the same functions; Python picks the module by the tensors' device.
// Kernel files include only the ATen headers they use: torch/extension.h would quadruple
// the build time (about a minute of headers per file).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

// upfirdn2d on input [N, C, H, W] (any strides) with a 2-D FIR kernel [kh, kw]:
// zero-insert by up, pad by pad0/pad1 (negative pads crop), convolve with the kernel
// (true convolution, as rosinality's upfirdn2d_native), keep every down-th sample.
at::Tensor upfirdn2d(const at::Tensor& input, const at::Tensor& kernel,
                     int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                     int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1);

// grad == 0: clamp(leaky_relu(input + bias) * scale, -clamp, clamp)
// grad == 1: (input + bias) * scale * d(leaky_relu)/dx, zeroed where the forward clamped;
//            `refer` is the forward output, whose sign and magnitude give the slope and mask.
// bias is [C] broadcast over dim 1, or empty; clamp < 0 means no clamp.
at::Tensor fused_bias_act(const at::Tensor& input, const at::Tensor& bias,
                          const at::Tensor& refer, int64_t grad, double negative_slope,
                          double scale, double clamp);

// The gradient of fused_bias_act (grad == 1 with no bias) and, when bias_grad, its sum over
// all dims but 1, which is the bias gradient.
std::vector<at::Tensor> fused_bias_act_backward(const at::Tensor& grad_output,
                                                const at::Tensor& refer, bool bias_grad,
                                                double negative_slope, double scale,
                                                double clamp);

// Output extent of one axis, as rosinality computes it.
inline int64_t upfirdn2d_out_size(int64_t in, int64_t up, int64_t down, int64_t pad0,
                                  int64_t pad1, int64_t taps) {
  return (in * up + pad0 + pad1 - taps + down) / down;
}

inline void check_upfirdn2d_args(const at::Tensor& input, const at::Tensor& kernel,
                                 int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y) {
  TORCH_CHECK(input.dim() == 4, "upfirdn2d: input must be [N, C, H, W]");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be 2-D");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              "upfirdn2d: up and down must be >= 1");
}

inline void check_fused_bias_act_args(const at::Tensor& input, const at::Tensor& bias,
                                      const at::Tensor& refer, int64_t grad) {
  TORCH_CHECK(grad == 0 || grad == 1, "fused_bias_act: grad must be 0 or 1");
  TORCH_CHECK(bias.numel() == 0 || (input.dim() >= 2 && bias.dim() == 1 &&
                                    bias.size(0) == input.size(1)),
              "fused_bias_act: bias must be empty or [C] with C = input.size(1)");
  TORCH_CHECK(grad == 0 || refer.sizes() == input.sizes(),
              "fused_bias_act: the backward needs refer shaped like input");
  TORCH_CHECK(bias.numel() == 0 || bias.scalar_type() == input.scalar_type(),
              "fused_bias_act: bias dtype must match input");
}
