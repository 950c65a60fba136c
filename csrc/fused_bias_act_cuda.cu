// Fused bias + leaky ReLU + gain (+ clamp) on CUDA, forward and backward, one thread per
// element (grid-stride). Half and bfloat16 compute in float, as NVlabs bias_act does.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "ops.h"

namespace {

template <typename scalar_t, typename acc_t>
__global__ void fused_bias_act_kernel(const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ bias,
                                      const scalar_t* __restrict__ refer,
                                      scalar_t* __restrict__ out, int64_t total, int64_t span,
                                      int64_t channels, bool grad, acc_t slope, acc_t scale,
                                      acc_t clamp) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (bias != nullptr) v += static_cast<acc_t>(bias[(i / span) % channels]);
    acc_t y;
    if (!grad) {
      y = (v > acc_t(0) ? v : v * slope) * scale;
      if (clamp >= acc_t(0)) y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
    } else {
      const acc_t r = static_cast<acc_t>(refer[i]);  // the forward output
      y = v * scale * (r > acc_t(0) ? acc_t(1) : slope);
      if (clamp >= acc_t(0) && !(r < clamp && r > -clamp)) y = acc_t(0);
    }
    out[i] = static_cast<scalar_t>(y);
  }
}

}  // namespace

at::Tensor fused_bias_act(const at::Tensor& input, const at::Tensor& bias,
                          const at::Tensor& refer, int64_t grad, double negative_slope,
                          double scale, double clamp) {
  check_fused_bias_act_args(input, bias, refer, grad);
  TORCH_CHECK(input.is_cuda(), "fused_bias_act: this build takes CUDA tensors");
  const at::cuda::OptionalCUDAGuard guard(input.device());
  const auto x = input.contiguous();
  const auto b = bias.contiguous();
  const auto r = grad ? refer.contiguous().to(x.scalar_type()) : refer;
  auto out = at::empty_like(x);
  const int64_t total = x.numel();
  if (total == 0) return out;

  const int64_t rows = x.dim() >= 2 ? x.size(0) : 1;
  const int64_t channels = x.dim() >= 2 ? x.size(1) : total;
  const int64_t span = total / (rows * channels);
  constexpr int kThreads = 256;
  const int blocks = (int)std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_bias_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    fused_bias_act_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), b.numel() ? b.data_ptr<scalar_t>() : nullptr,
        grad ? r.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), total, span,
        channels, grad == 1, static_cast<acc_t>(negative_slope), static_cast<acc_t>(scale),
        static_cast<acc_t>(clamp));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> fused_bias_act_backward(const at::Tensor& grad_output,
                                                const at::Tensor& refer, bool bias_grad,
                                                double negative_slope, double scale,
                                                double clamp) {
  const auto empty = grad_output.new_empty({0});
  auto grad_input = fused_bias_act(grad_output, empty, refer, 1, negative_slope, scale, clamp);
  if (!bias_grad) return {grad_input, empty};
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < grad_input.dim(); ++d) dims.push_back(d);
  return {grad_input, grad_input.sum(dims)};
}
