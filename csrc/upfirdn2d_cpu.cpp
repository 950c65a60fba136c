// upfirdn2d on the CPU: upsample by zero insertion, pad or crop, FIR filter, downsample.
//
// Each (n, c) plane runs on one thread. Its rows are first "expanded": zero-inserted, padded
// and split into `down_x` phases, so that every horizontal tap reads a contiguous run and the
// inner loops vectorise. A rank-1 kernel (every StyleGAN2 blur kernel is an outer product)
// runs as a horizontal then a vertical 1-D pass, kh + kw multiply-adds per output instead of
// kh * kw; any other kernel runs the full 2-D sum. Vertical taps that land on inserted zeros
// or padding are skipped outright, and downsampling computes only the kept outputs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops.h"

namespace {

// One axis: out[o] = sum_i taps[i] * upsampled[o * down + i - pad0] (taps in correlation order).
struct Axis {
  int64_t in, up, down, pad0, taps, out;

  // The input index tap `i` of output `o` reads, or -1 for an inserted zero or padding.
  int64_t source(int64_t o, int64_t i) const {
    const int64_t t = o * down + i - pad0;
    if (t < 0 || t % up != 0 || t / up >= in) return -1;
    return t / up;
  }

  // Length of each of the `down` phases of an expanded row: what the last output's taps reach.
  int64_t phase_len() const { return out + (taps - 1) / down + 1; }
};

// Writes row x (elements `stride` apart) zero-inserted and padded, phase r holding positions
// r, r + down, r + 2 down, ...; positions past the cropped end are never read.
template <typename T>
void expand_row(const T* x, int64_t stride, const Axis& ax, T* phases) {
  const int64_t len = ax.phase_len();
  std::fill(phases, phases + ax.down * len, T(0));
  for (int64_t t = 0; t < ax.in; ++t) {
    const int64_t j = t * ax.up + ax.pad0;
    if (j < 0) continue;
    if (j / ax.down >= len) break;
    phases[(j % ax.down) * len + j / ax.down] = x[t * stride];
  }
}

template <typename T>
void axpy(T w, const T* __restrict__ x, T* __restrict__ out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] += w * x[i];
}

// out[o] += sum_i w[i] * row[o * down + i] for an expanded row.
template <typename T>
void filter_row(const T* phases, const Axis& ax, const T* w, T* out) {
  const int64_t len = ax.phase_len();
  for (int64_t i = 0; i < ax.taps; ++i)
    axpy(w[i], phases + (i % ax.down) * len + i / ax.down, out, ax.out);
}

// Vertical pass: output row oy gathers the rows its taps read, skipping zeros and padding.
template <typename T>
void filter_columns(const T* rows, int64_t row_stride, const Axis& ax, const Axis& ay,
                    const T* wy, T* out) {
  for (int64_t oy = 0; oy < ay.out; ++oy) {
    T* o = out + oy * ax.out;
    std::fill(o, o + ax.out, T(0));
    for (int64_t i = 0; i < ay.taps; ++i) {
      const int64_t y = ay.source(oy, i);
      if (y >= 0) axpy(wy[i], rows + y * row_stride, o, ax.out);
    }
  }
}

template <typename T>
void plane_separable(const T* x, int64_t stride_y, int64_t stride_x, const Axis& ax,
                     const Axis& ay, const T* wx, const T* wy, T* out, T* phases, T* rows) {
  for (int64_t y = 0; y < ay.in; ++y) {
    expand_row(x + y * stride_y, stride_x, ax, phases);
    T* r = rows + y * ax.out;
    std::fill(r, r + ax.out, T(0));
    filter_row(phases, ax, wx, r);
  }
  filter_columns(rows, ax.out, ax, ay, wy, out);
}

template <typename T>
void plane_general(const T* x, int64_t stride_y, int64_t stride_x, const Axis& ax,
                   const Axis& ay, const T* w2d, T* out, T* phases) {
  const int64_t block = ax.down * ax.phase_len();
  for (int64_t y = 0; y < ay.in; ++y) expand_row(x + y * stride_y, stride_x, ax, phases + y * block);
  for (int64_t oy = 0; oy < ay.out; ++oy) {
    T* o = out + oy * ax.out;
    std::fill(o, o + ax.out, T(0));
    for (int64_t i = 0; i < ay.taps; ++i) {
      const int64_t y = ay.source(oy, i);
      if (y >= 0) filter_row(phases + y * block, ax, w2d + i * ax.taps, o);
    }
  }
}

// Splits k into col[y] * row[x] when it is rank one to within `tol` of its largest tap.
template <typename T>
bool factor_rank_one(const at::Tensor& k, double tol, std::vector<T>& col,
                     std::vector<T>& row) {
  const auto a = k.accessor<double, 2>();
  const int64_t kh = k.size(0), kw = k.size(1);
  int64_t py = 0, px = 0;
  for (int64_t y = 0; y < kh; ++y)
    for (int64_t x = 0; x < kw; ++x)
      if (std::abs(a[y][x]) > std::abs(a[py][px])) py = y, px = x;
  const double peak = a[py][px];
  col.assign(kh, T(0));
  row.assign(kw, T(0));
  if (peak == 0) return true;
  for (int64_t y = 0; y < kh; ++y)
    for (int64_t x = 0; x < kw; ++x)
      if (std::abs(a[y][px] * (a[py][x] / peak) - a[y][x]) > tol * std::abs(peak)) return false;
  for (int64_t y = 0; y < kh; ++y) col[y] = static_cast<T>(a[y][px]);
  for (int64_t x = 0; x < kw; ++x) row[x] = static_cast<T>(a[py][x] / peak);
  return true;
}

}  // namespace

at::Tensor upfirdn2d(const at::Tensor& input, const at::Tensor& kernel,
                     int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                     int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  check_upfirdn2d_args(input, kernel, up_x, up_y, down_x, down_y);
  const int64_t batch = input.size(0), channels = input.size(1);
  const int64_t kh = kernel.size(0), kw = kernel.size(1);
  const Axis ax{input.size(3), up_x, down_x, pad_x0, kw,
                upfirdn2d_out_size(input.size(3), up_x, down_x, pad_x0, pad_x1, kw)};
  const Axis ay{input.size(2), up_y, down_y, pad_y0, kh,
                upfirdn2d_out_size(input.size(2), up_y, down_y, pad_y0, pad_y1, kh)};
  TORCH_CHECK(ax.out >= 0 && ay.out >= 0, "upfirdn2d: kernel larger than the padded input");
  auto out = at::empty({batch, channels, ay.out, ax.out}, input.options());
  if (out.numel() == 0) return out;

  // Taps in correlation order: the op convolves, as rosinality's conv2d with a flipped kernel.
  const auto taps = kernel.to(at::kDouble).flip({0, 1}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "upfirdn2d_cpu", [&] {
    std::vector<scalar_t> wy, wx;
    const double tol = 16 * std::numeric_limits<scalar_t>::epsilon();
    const bool separable = factor_rank_one(taps, tol, wy, wx);
    const auto taps_t = taps.to(input.scalar_type());
    const scalar_t* w2d = taps_t.data_ptr<scalar_t>();

    const scalar_t* x = input.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    const int64_t sn = input.stride(0), sc = input.stride(1);
    const int64_t sy = input.stride(2), sx = input.stride(3);
    const int64_t plane_out = ay.out * ax.out;
    const int64_t block = ax.down * ax.phase_len();
    const int64_t grain = std::max<int64_t>(1, 16384 / plane_out);
    at::parallel_for(0, batch * channels, grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> phases(separable ? block : ay.in * block);
      std::vector<scalar_t> rows(separable ? ay.in * ax.out : 0);
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* xp = x + (p / channels) * sn + (p % channels) * sc;
        scalar_t* yp = y + p * plane_out;
        if (separable)
          plane_separable(xp, sy, sx, ax, ay, wx.data(), wy.data(), yp, phases.data(),
                          rows.data());
        else
          plane_general(xp, sy, sx, ax, ay, w2d, yp, phases.data());
      }
    });
  });
  return out;
}
