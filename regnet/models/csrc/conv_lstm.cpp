// One ConvLSTM step of the efficient gate form on a CPU, float32, channels-last: each gate k is
// act_k(Kx_k * X + Kh_k * H + b_k) with depthwise 3x3 kernels (the paper's grouped 1x1 folded into them,
// see GateConv._folded), then C = f*C_prev + i*g and H = o*tanh(C).
//
// Why a kernel of its own: in PyTorch ops the step is 8 depthwise convolutions and about a dozen
// element-wise passes over maps as large as the block's features, each bound by memory traffic. Here a
// pixel's four gates, its cell update and its output are computed while its 3x3 neighbourhood of X and H
// is in registers and L1, so a forward pass reads X, H and C once and writes H and C (and, for training,
// the four gates the backward needs). The backward recomputes tanh(C) and does the transposed
// convolutions and the kernels' gradients image by image, with the gates' gradients in L2.
//
// Layouts: maps are [N, H, W, C] (a channels-last NCHW tensor's memory); kernels [4, 9, C]; bias [4, C];
// the saved gates four maps. An empty tensor stands for a zero state.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>

namespace {

constexpr int kGates = 4;  // i, f, o, g
constexpr int kTaps = 9;
constexpr int kLanes = 16;

// 16 channels as one value (a GCC/Clang vector): one AVX-512 register, two AVX2 or four SSE ones. The kernels
// below are templates over T = Vec (16 channels at a time) or T = float (the channels left over), so that a
// pixel's accumulators stay in registers whatever the width, and the compiler never has to prove a loop safe
// to vectorise (it would not vectorise floorf, for one).
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

#define ALWAYS_INLINE inline __attribute__((always_inline))

ALWAYS_INLINE int32_t to_int(float x) { return static_cast<int32_t>(x); }
ALWAYS_INLINE IVec to_int(Vec x) { return __builtin_convertvector(x, IVec); }

template <class T>
ALWAYS_INLINE T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
ALWAYS_INLINE void store(float* p, const T& v) {
  std::memcpy(p, &v, sizeof(T));
}

template <class T>
ALWAYS_INLINE T splat(float x) {
  return T{} + x;
}

// exp(x) by range reduction and Cephes' degree-6 polynomial (about 2 ulp); round(x / ln 2) by adding and
// subtracting 1.5 * 2^23.
template <class T>
ALWAYS_INLINE T exp_approx(T x) {
  x = x < splat<T>(-87.0f) ? splat<T>(-87.0f) : x;
  x = x > splat<T>(88.0f) ? splat<T>(88.0f) : x;
  const T n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  T r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  T p = splat<T>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(T, (to_int(n) + 127) << 23);
}

// 1 / d for d >= 1. On AVX-512 by the 14-bit reciprocal and one Newton step (to about 1 ulp): a division is
// ten times the cost, and a step divides five times per value.
ALWAYS_INLINE float reciprocal(float d) { return 1.0f / d; }
ALWAYS_INLINE Vec reciprocal(Vec d) {
#if defined(__AVX512F__)
  const Vec r = reinterpret_cast<Vec>(_mm512_rcp14_ps(reinterpret_cast<__m512>(d)));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

template <class T>
ALWAYS_INLINE T sigmoid(T x) {
  return reciprocal(1.0f + exp_approx(-x));
}

template <class T>
ALWAYS_INLINE T tanh_approx(T x) {
  return 1.0f - 2.0f * reciprocal(1.0f + exp_approx(x * 2.0f));
}

// body(T{}, c0) over a pixel's channels: blocks of 16 as Vec, then the rest one by one as float.
template <class Body>
ALWAYS_INLINE void for_blocks(int64_t channels, Body&& body) {
  int64_t c0 = 0;
  for (; c0 + kLanes <= channels; c0 += kLanes) body(Vec{}, c0);
  for (; c0 < channels; ++c0) body(0.0f, c0);
}

struct Shape {
  int64_t n, h, w, c;
  int64_t map() const { return h * w * c; }
};

Shape shape_of(const at::Tensor& x) { return {x.size(0), x.size(2), x.size(3), x.size(1)}; }

const float* data_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

const float* at_image(const float* base, int64_t off) { return base ? base + off : nullptr; }
float* at_image(float* base, int64_t off) { return base ? base + off : nullptr; }

void check_map(const at::Tensor& t, const Shape& s, const char* name) {
  if (!t.numel()) return;
  TORCH_CHECK(t.dtype() == at::kFloat && t.device().is_cpu(), name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 4 && t.size(0) == s.n && t.size(1) == s.c && t.size(2) == s.h && t.size(3) == s.w,
              name, " must have the input's shape");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels-last");
}

at::Tensor empty_map(const Shape& s, const at::Tensor& like) {
  return at::empty({s.n, s.c, s.h, s.w}, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

at::Tensor none_like(const at::Tensor& like) { return at::empty({0}, like.options()); }

// The folded kernels and bias of a step (see GateConv._folded).
struct Weights {
  const float *kx, *kh, *bias;
};

// One image's maps in a forward step (null: a zero state, or gates not saved).
struct ImageStep {
  const float *x, *h, *c_prev;
  float *c, *h_out, *gate[kGates];
};

// a[k] += the 3x3 taps of M around pixel (y, x) weighted by w[k, tap], for channels c0.. of a block.
template <class T>
ALWAYS_INLINE void add_taps(const float* M, const float* w, const Shape& s, int64_t y, int64_t x, int64_t c0,
                            T (&a)[kGates]) {
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t yy = y + ky - 1;
    if (yy < 0 || yy >= s.h) continue;
#pragma GCC unroll 3
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t xx = x + kx - 1;
      if (xx < 0 || xx >= s.w) continue;
      const T m = load<T>(M + (yy * s.w + xx) * s.c + c0);
#pragma GCC unroll 4
      for (int k = 0; k < kGates; ++k) a[k] += load<T>(w + (k * kTaps + ky * 3 + kx) * s.c + c0) * m;
    }
  }
}

// One pixel's channel block of a forward step: gates, cell update, output, and the gates if they are saved.
template <class T>
ALWAYS_INLINE void forward_at(const ImageStep& m, const Weights& wt, const Shape& s, int64_t y, int64_t x,
                              int64_t c0) {
  const int64_t C = s.c, p = (y * s.w + x) * C + c0;
  T a[kGates];
#pragma GCC unroll 4
  for (int k = 0; k < kGates; ++k) a[k] = load<T>(wt.bias + k * C + c0);
  add_taps<T>(m.x, wt.kx, s, y, x, c0, a);
  if (m.h) add_taps<T>(m.h, wt.kh, s, y, x, c0, a);
  const T i = sigmoid(a[0]), f = sigmoid(a[1]), o = sigmoid(a[2]), g = tanh_approx(a[3]);
  T cell = i * g;
  if (m.c_prev) cell += f * load<T>(m.c_prev + p);
  store(m.c + p, cell);
  store(m.h_out + p, o * tanh_approx(cell));
  if (!m.gate[0]) return;
  store(m.gate[0] + p, i);
  store(m.gate[1] + p, f);
  store(m.gate[2] + p, o);
  store(m.gate[3] + p, g);
}

}  // namespace

// Forward: (h, c) and, if `save`, the activated gates i, f, o, g (the backward's input).
std::vector<at::Tensor> lstm_forward(at::Tensor x, at::Tensor h, at::Tensor c, at::Tensor kx,
                                        at::Tensor kh, at::Tensor bias, bool save) {
  const Shape s = shape_of(x);
  check_map(x, s, "x");
  check_map(h, s, "h");
  check_map(c, s, "c");
  TORCH_CHECK(kx.is_contiguous() && kh.is_contiguous() && bias.is_contiguous() && kx.numel() == kGates * kTaps * s.c
              && kh.numel() == kx.numel() && bias.numel() == kGates * s.c, "kernels must be [4, 9, C], bias [4, C]");
  std::vector<at::Tensor> out{empty_map(s, x), empty_map(s, x)};
  // The saved gates as four maps, not one [N, H, W, 4, C] tensor: a stage-1 batch's would be 32 MB, which the
  // allocator takes from the kernel (mmap and page faults) on every call instead of reusing freed memory.
  for (int k = 0; k < kGates && save; ++k) out.push_back(empty_map(s, x));
  const Weights wt{kx.data_ptr<float>(), kh.data_ptr<float>(), bias.data_ptr<float>()};
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t off = n * s.map();
      ImageStep m{x.data_ptr<float>() + off, at_image(data_or_null(h), off), at_image(data_or_null(c), off),
                  out[1].data_ptr<float>() + off, out[0].data_ptr<float>() + off, {}};
      for (int k = 0; k < kGates && save; ++k) m.gate[k] = out[2 + k].data_ptr<float>() + off;
      for (int64_t y = 0; y < s.h; ++y)
        for (int64_t xw = 0; xw < s.w; ++xw)
          for_blocks(s.c, [&](auto lanes, int64_t c0) { forward_at<decltype(lanes)>(m, wt, s, y, xw, c0); });
    }
  });
  return out;
}

namespace {

// The maps one image's backward reads and writes (null: a zero state, a zero gradient).
struct ImageGrads {
  const float *gate[kGates], *c, *dh, *dc, *c_prev, *x, *h;
  float *dx, *dh_prev, *dc_prev;
};

// One pixel's channel block of the gates' pre-activation gradients, into D [H*W, 4, C]; and C_prev's gradient.
template <class T>
ALWAYS_INLINE void gate_grads_at(const ImageGrads& m, const Shape& s, int64_t p, int64_t c0, float* D) {
  const int64_t q = p * s.c + c0;
  const T i = load<T>(m.gate[0] + q), f = load<T>(m.gate[1] + q), o = load<T>(m.gate[2] + q),
          g = load<T>(m.gate[3] + q);
  const T t = tanh_approx(load<T>(m.c + q));
  const T gh = m.dh ? load<T>(m.dh + q) : T{};
  const T cell = (m.dc ? load<T>(m.dc + q) : T{}) + gh * o * (1.0f - t * t);
  float* d = D + p * kGates * s.c + c0;
  store(d, cell * g * i * (1.0f - i));
  store(d + s.c, m.c_prev ? cell * load<T>(m.c_prev + q) * f * (1.0f - f) : T{});
  store(d + 2 * s.c, gh * t * o * (1.0f - o));
  store(d + 3 * s.c, cell * i * (1.0f - g * g));
  if (m.dc_prev) store(m.dc_prev + q, cell * f);
}

// dX (and dH, if H is given) at pixel (y, x), block: the transposed depthwise convolutions of D, i.e. the sum
// over taps and gates of w[k, tap] * D[the output pixel whose tap reads (y, x), k]. Both in one pass, so that
// each D value loaded serves both.
template <class T, bool kWithH>
ALWAYS_INLINE void transposed_at(const float* D, const Weights& wt, const Shape& s, int64_t y, int64_t x,
                                 int64_t c0, float* dx, float* dh) {
  T ax{}, ah{};
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t ry = y - ky + 1;
    if (ry < 0 || ry >= s.h) continue;
#pragma GCC unroll 3
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t rx = x - kx + 1;
      if (rx < 0 || rx >= s.w) continue;
      const float* d = D + (ry * s.w + rx) * kGates * s.c + c0;
#pragma GCC unroll 4
      for (int k = 0; k < kGates; ++k) {
        const int64_t w = (k * kTaps + ky * 3 + kx) * s.c + c0;
        const T dk = load<T>(d + k * s.c);
        ax += load<T>(wt.kx + w) * dk;
        if (kWithH) ah += load<T>(wt.kh + w) * dk;
      }
    }
  }
  const int64_t p = (y * s.w + x) * s.c + c0;
  store(dx + p, ax);
  if (kWithH) store(dh + p, ah);
}

template <class T>
ALWAYS_INLINE void add_lanes(double* out, const T& v) {
  float lanes[sizeof(T) / sizeof(float)];
  std::memcpy(lanes, &v, sizeof(T));
  for (size_t j = 0; j < sizeof(T) / sizeof(float); ++j) out[j] += lanes[j];
}

// dkx[k, tap, block] (and dkh, if H is given) += the sum over the pixels p whose tap is inside the image of
// D[p, k] * X[p + tap] (and * H[p + tap]), in one pass over D; at the centre tap, which sees every pixel, the
// bias's gradient (the sum of D) too.
template <class T, bool kWithH>
ALWAYS_INLINE void weight_grads_at(const float* D, const float* X, const float* H, const Shape& s, int ky, int kx,
                                   int64_t c0, double* dkx, double* dkh, double* db) {
  T ax[kGates] = {}, ah[kGates] = {}, ab[kGates] = {};
  const bool centre = ky == 1 && kx == 1;
  const int64_t y0 = ky == 0 ? 1 : 0, y1 = ky == 2 ? s.h - 1 : s.h;
  const int64_t x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? s.w - 1 : s.w;
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) {
      const float* d = D + (y * s.w + x) * kGates * s.c + c0;
      const int64_t q = ((y + ky - 1) * s.w + x + kx - 1) * s.c + c0;
      const T xq = load<T>(X + q), hq = kWithH ? load<T>(H + q) : T{};
#pragma GCC unroll 4
      for (int k = 0; k < kGates; ++k) {
        const T dk = load<T>(d + k * s.c);
        ax[k] += dk * xq;
        if (kWithH) ah[k] += dk * hq;
        if (centre) ab[k] += dk;
      }
    }
  for (int k = 0; k < kGates; ++k) {
    const int64_t w = (k * kTaps + ky * 3 + kx) * s.c + c0;
    add_lanes(dkx + w, ax[k]);
    if (kWithH) add_lanes(dkh + w, ah[k]);
    if (centre) add_lanes(db + k * s.c + c0, ab[k]);
  }
}

// One image's backward: the gates' gradients into D, then X's and H's gradients, and the kernels' and bias's
// into `sums` ([dkx, dkh, dbias]).
void image_backward(const ImageGrads& m, const Weights& wt, const Shape& s, float* D, double* sums) {
  const int64_t hw = s.h * s.w, nk = kGates * kTaps * s.c;
  for (int64_t p = 0; p < hw; ++p)
    for_blocks(s.c, [&](auto lanes, int64_t c0) { gate_grads_at<decltype(lanes)>(m, s, p, c0, D); });
  for (int64_t y = 0; y < s.h; ++y)
    for (int64_t x = 0; x < s.w; ++x)
      for_blocks(s.c, [&](auto lanes, int64_t c0) {
        using T = decltype(lanes);
        if (m.dh_prev) transposed_at<T, true>(D, wt, s, y, x, c0, m.dx, m.dh_prev);
        else transposed_at<T, false>(D, wt, s, y, x, c0, m.dx, nullptr);
      });
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx)
      for_blocks(s.c, [&](auto lanes, int64_t c0) {
        using T = decltype(lanes);
        if (m.h) weight_grads_at<T, true>(D, m.x, m.h, s, ky, kx, c0, sums, sums + nk, sums + 2 * nk);
        else weight_grads_at<T, false>(D, m.x, nullptr, s, ky, kx, c0, sums, nullptr, sums + 2 * nk);
      });
}

}  // namespace

// Backward: (dx, dh_prev, dc_prev, dkx, dkh, dbias); dh_prev / dc_prev are empty where the state was zero, and
// an empty dh or dc stands for a zero gradient. The kernels' gradients are summed in float64 per thread and
// then in the threads' order, so they do not depend on how the images were scheduled.
std::vector<at::Tensor> lstm_backward(at::Tensor dh, at::Tensor dc, std::vector<at::Tensor> gates,
                                         at::Tensor c_out, at::Tensor x, at::Tensor h, at::Tensor c,
                                         at::Tensor kx, at::Tensor kh) {
  const Shape s = shape_of(x);
  TORCH_CHECK(gates.size() == kGates, "four gate maps expected");
  for (auto* t : {&dh, &dc, &c_out, &h, &c, &gates[0], &gates[1], &gates[2], &gates[3]}) check_map(*t, s, "a map");
  auto dx = empty_map(s, x), dh_prev = h.numel() ? empty_map(s, x) : none_like(x);
  auto dc_prev = c.numel() ? empty_map(s, x) : none_like(x);
  const int64_t nk = kGates * kTaps * s.c, per = 2 * nk + kGates * s.c;
  const int threads = at::get_num_threads();
  std::vector<double> sums(static_cast<size_t>(threads) * per, 0.0);
  const Weights wt{kx.data_ptr<float>(), kh.data_ptr<float>(), nullptr};
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    const int thread = at::get_thread_num();
    TORCH_CHECK(thread < threads, "more threads than at the start of the backward");
    std::vector<float> D(s.h * s.w * kGates * s.c);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t off = n * s.map();
      const ImageGrads m{{gates[0].data_ptr<float>() + off, gates[1].data_ptr<float>() + off,
                          gates[2].data_ptr<float>() + off, gates[3].data_ptr<float>() + off},
                         c_out.data_ptr<float>() + off, at_image(data_or_null(dh), off),
                         at_image(data_or_null(dc), off), at_image(data_or_null(c), off), x.data_ptr<float>() + off,
                         at_image(data_or_null(h), off), dx.data_ptr<float>() + off,
                         at_image(h.numel() ? dh_prev.data_ptr<float>() : nullptr, off),
                         at_image(c.numel() ? dc_prev.data_ptr<float>() : nullptr, off)};
      image_backward(m, wt, s, D.data(), sums.data() + static_cast<size_t>(thread) * per);
    }
  });
  auto grads = at::zeros({per}, x.options().dtype(at::kDouble));
  double* total = grads.data_ptr<double>();
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < per; ++j) total[j] += sums[static_cast<size_t>(t) * per + j];
  grads = grads.to(at::kFloat);
  return {dx, dh_prev, dc_prev, grads.narrow(0, 0, nk).view({kGates, kTaps, s.c}),
          grads.narrow(0, nk, nk).view({kGates, kTaps, s.c}), grads.narrow(0, 2 * nk, kGates * s.c).view({kGates, s.c})};
}

// Registered as torch operators (torch.ops.regnet.*), so that the profiler and dispatch modes see them.
TORCH_LIBRARY(regnet, m) {
  m.def("lstm_forward(Tensor x, Tensor h, Tensor c, Tensor kx, Tensor kh, Tensor bias, bool save) -> Tensor[]");
  m.def("lstm_backward(Tensor dh, Tensor dc, Tensor[] gates, Tensor c_out, Tensor x, Tensor h, Tensor c, "
        "Tensor kx, Tensor kh) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(regnet, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}
