// upfirdn2d on CUDA: one thread per output sample, visiting only the taps that land on input
// samples, never on inserted zeros or padding. It follows the generic ("large") kernel of
// NVlabs stylegan2-ada-pytorch: one code path for every geometry, dtype and input stride.
// Rosinality's tiled kernels are faster for 2x resampling; profile before specialising.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "ops.h"

namespace {

struct Axis {
  int in, up, down, pad0, taps, out;
  int64_t stride;  // input stride along this axis, in elements
};

// The taps of output `o` that read input samples: tap first + m * up reads input sample
// start + m, for m in [m_begin, m_end).
struct Taps {
  int first, start, m_begin, m_end;
};

__device__ __forceinline__ Taps taps_of(const Axis& a, int o) {
  const int base = o * a.down - a.pad0;         // padded-upsampled position of tap 0
  const int first = ((-base) % a.up + a.up) % a.up;  // first tap on a non-inserted sample
  const int start = (base + first) / a.up;       // exact division
  Taps t;
  t.first = first;
  t.start = start;
  t.m_begin = max(0, -start);
  t.m_end = min((a.taps - first + a.up - 1) / a.up, a.in - start);
  return t;
}

template <typename scalar_t, typename acc_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ kernel,
                                 scalar_t* __restrict__ y, int64_t total, int channels,
                                 int64_t stride_n, int64_t stride_c, Axis ax, Axis ay) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int ox = idx % ax.out;
    const int oy = (idx / ax.out) % ay.out;
    const int64_t plane = idx / ((int64_t)ax.out * ay.out);
    const scalar_t* xp = x + (plane / channels) * stride_n + (plane % channels) * stride_c;
    const Taps ty = taps_of(ay, oy), tx = taps_of(ax, ox);
    acc_t v = 0;
    for (int my = ty.m_begin; my < ty.m_end; ++my) {
      // Convolution, not correlation: tap i multiplies kernel element taps - 1 - i.
      const acc_t* krow = kernel + (ay.taps - 1 - (ty.first + my * ay.up)) * ax.taps;
      const scalar_t* row = xp + (ty.start + my) * ay.stride;
      for (int mx = tx.m_begin; mx < tx.m_end; ++mx)
        v += static_cast<acc_t>(row[(tx.start + mx) * ax.stride]) *
             krow[ax.taps - 1 - (tx.first + mx * ax.up)];
    }
    y[idx] = static_cast<scalar_t>(v);
  }
}

}  // namespace

at::Tensor upfirdn2d(const at::Tensor& input, const at::Tensor& kernel,
                     int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                     int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  check_upfirdn2d_args(input, kernel, up_x, up_y, down_x, down_y);
  TORCH_CHECK(input.is_cuda(), "upfirdn2d: this build takes CUDA tensors");
  const at::cuda::OptionalCUDAGuard guard(input.device());
  const int64_t batch = input.size(0), channels = input.size(1);
  const int kh = kernel.size(0), kw = kernel.size(1);
  const int64_t out_h = upfirdn2d_out_size(input.size(2), up_y, down_y, pad_y0, pad_y1, kh);
  const int64_t out_w = upfirdn2d_out_size(input.size(3), up_x, down_x, pad_x0, pad_x1, kw);
  TORCH_CHECK(out_h >= 0 && out_w >= 0, "upfirdn2d: kernel larger than the padded input");
  auto out = at::empty({batch, channels, out_h, out_w}, input.options());
  const int64_t total = out.numel();
  if (total == 0) return out;

  const Axis ax{(int)input.size(3), (int)up_x, (int)down_x, (int)pad_x0, kw, (int)out_w, input.stride(3)};
  const Axis ay{(int)input.size(2), (int)up_y, (int)down_y, (int)pad_y0, kh, (int)out_h, input.stride(2)};
  constexpr int kThreads = 256;
  const int blocks = (int)std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = kernel.to(input.device(), c10::CppTypeToScalarType<acc_t>::value).contiguous();
    upfirdn2d_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        input.data_ptr<scalar_t>(), taps.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), total,
        (int)channels, input.stride(0), input.stride(1), ax, ay);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}
