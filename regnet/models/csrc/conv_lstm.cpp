// One ConvLSTM step of the efficient gate form on a CPU (see depthwise.h): gates i, f, o, g from X and H, then
// C = f*C_prev + i*g and H = o*tanh(C). The forward reads X, H and C once and writes H and C (and, for
// training, the four gates); the backward recomputes tanh(C) and works image by image, its gates'
// gradients in L2.
#include <torch/library.h>

#include "norm.h"

namespace regnet {
namespace {

constexpr int kGates = 4;  // i, f, o, g

// One image's maps in a forward step (null: a zero state, or gates not saved).
struct LstmImage {
  const float *x, *h, *c_prev;
  float *c, *h_out, *gate[kGates];
};

// P neighbouring pixels' channel block of a forward step: gates, cell update, output, and the gates if saved.
template <int P, class T>
ALWAYS_INLINE void lstm_at(const LstmImage& m, const float* kx, const float* kh, const float* bias, const Shape& s,
                           int64_t y, int64_t x, int64_t c0) {
  T a[P][kGates];
  gate_sums<kGates, P, T>(m.x, m.h, kx, kh, bias, s, y, x, c0, a);
#pragma GCC unroll 2
  for (int q = 0; q < P; ++q) {
    const int64_t p = s.at(y, x + q) + c0;
    const T i = sigmoid(a[q][0]), f = sigmoid(a[q][1]), o = sigmoid(a[q][2]), g = tanh_approx(a[q][3]);
    T cell = i * g;
    if (m.c_prev) cell += f * load<T>(m.c_prev + p);
    store(m.c + p, cell);
    store(m.h_out + p, o * tanh_approx(cell));
    if (!m.gate[0]) continue;
    store(m.gate[0] + p, i);
    store(m.gate[1] + p, f);
    store(m.gate[2] + p, o);
    store(m.gate[3] + p, g);
  }
}

// The maps one image's backward reads and writes (null: a zero state, a zero gradient).
struct LstmGrads {
  const float *gate[kGates], *c, *dh, *dc, *c_prev;
  float *dc_prev;
  NormGrad norm;  // H's gradient through the regulator's norm, when the step ran with it (see norm.h)
};

// One pixel's channel block of the gates' pre-activation gradients, into D [H*W, 4, C]; and C_prev's gradient.
template <class T>
ALWAYS_INLINE void lstm_grads_at(const LstmGrads& m, const Shape& s, int64_t p, int64_t c0, float* D) {
  const int64_t q = p * s.c + c0;
  const T i = load<T>(m.gate[0] + q), f = load<T>(m.gate[1] + q), o = load<T>(m.gate[2] + q),
          g = load<T>(m.gate[3] + q);
  const T t = tanh_approx(load<T>(m.c + q));
  T gh = m.dh ? load<T>(m.dh + q) : T{};
  if (m.norm.dB) gh += m.norm.template at<T>(s, p, c0);
  const T cell = (m.dc ? load<T>(m.dc + q) : T{}) + gh * o * (1.0f - t * t);
  float* d = D + p * kGates * s.c + c0;
  store(d, cell * g * i * (1.0f - i));
  store(d + s.c, m.c_prev ? cell * load<T>(m.c_prev + q) * f * (1.0f - f) : T{});
  store(d + 2 * s.c, gh * t * o * (1.0f - o));
  store(d + 3 * s.c, cell * i * (1.0f - g * g));
  if (m.dc_prev) store(m.dc_prev + q, cell * f);
}

}  // namespace

// Forward: (h, c), then, if `save`, the activated gates i, f, o, g (the backward's input), then, if `moments`,
// H's mean and biased variance per channel [2, C] (for the regulator's norm in training, see norm.h).
std::vector<at::Tensor> lstm_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                     const at::Tensor& kx, const at::Tensor& kh, const at::Tensor& bias, bool save,
                                     bool moments) {
  const Shape s = shape_of(x);
  for (const auto* t : {&x, &h, &c}) check_map(*t, s);
  check_kernels(kx, bias, kGates, s);
  check_kernels(kh, at::Tensor(), kGates, s);
  std::vector<at::Tensor> out{empty_map(s, x), empty_map(s, x)};
  // The saved gates as four maps, not one [N, H, W, 4, C] tensor: a stage-1 batch's would be 32 MB, which the
  // allocator takes from the kernel (mmap and page faults) on every call instead of reusing freed memory.
  for (int k = 0; k < kGates && save; ++k) out.push_back(empty_map(s, x));
  ImageMoments h_moments(s, moments);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      LstmImage m{image(x.data_ptr<float>(), s, n), image(data_or_null(h), s, n), image(data_or_null(c), s, n),
                  image(out[1].data_ptr<float>(), s, n), image(out[0].data_ptr<float>(), s, n), {}};
      for (int k = 0; k < kGates && save; ++k) m.gate[k] = image(out[2 + k].data_ptr<float>(), s, n);
      for_pixel_runs(s.h, s.w, s.c, [&](int64_t y, int64_t xw, auto pixels, auto lanes, int64_t c0) {
        lstm_at<decltype(pixels)::value, decltype(lanes)>(m, kx.data_ptr<float>(), kh.data_ptr<float>(),
                                                           bias.data_ptr<float>(), s, y, xw, c0);
      });
      if (moments) h_moments.add(m.h_out, n);
    }
  });
  if (moments) out.push_back(h_moments.result(x.options()));
  return out;
}

// Backward: (dx, dh_prev, dc_prev, dkx, dkh, dbias); dh_prev / dc_prev are empty where the state was zero, and
// an empty dh or dc stands for a zero gradient. With the regulator's norm (dB, the concatenation's gradient,
// not empty; see norm.h): H's gradient through it is added to dh, and with `add_features` (the features are
// X) dB's features half to dx.
std::vector<at::Tensor> lstm_backward(const at::Tensor& dh, const at::Tensor& dc, at::TensorList gates,
                                      const at::Tensor& c_out, const at::Tensor& x, const at::Tensor& h,
                                      const at::Tensor& c, const at::Tensor& kx, const at::Tensor& kh,
                                      const at::Tensor& dB, const at::Tensor& h_out, const at::Tensor& coef,
                                      bool add_features) {
  const Shape s = shape_of(x);
  TORCH_CHECK(gates.size() == kGates, "four gate maps expected");
  for (const auto* t : {&dh, &dc, &c_out, &h, &c, &gates[0], &gates[1], &gates[2], &gates[3]}) check_map(*t, s);
  check_norm(dB, h_out, coef, s);
  auto dx = empty_map(s, x), dh_prev = h.numel() ? empty_map(s, x) : none_like(x);
  auto dc_prev = c.numel() ? empty_map(s, x) : none_like(x);
  const int64_t nk = kGates * kTaps * s.c;
  ThreadSums sums(2 * nk + kGates * s.c);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    float* D = scratch(s.h * s.w * kGates * s.c);
    double* mine = sums.mine();
    for (int64_t n = begin; n < end; ++n) {
      const LstmGrads m{{image(gates[0].data_ptr<float>(), s, n), image(gates[1].data_ptr<float>(), s, n),
                         image(gates[2].data_ptr<float>(), s, n), image(gates[3].data_ptr<float>(), s, n)},
                        image(c_out.data_ptr<float>(), s, n), image(data_or_null(dh), s, n),
                        image(data_or_null(dc), s, n), image(data_or_null(c), s, n), image(data_or_null(dc_prev), s, n),
                        norm_grad(dB, h_out, coef, s, n)};
      for (int64_t p = 0; p < s.h * s.w; ++p)
        for_blocks(s.c, [&](auto lanes, int64_t c0) { lstm_grads_at<decltype(lanes)>(m, s, p, c0, D); });
      const float *x_n = image(x.data_ptr<float>(), s, n), *h_n = image(data_or_null(h), s, n);
      float *dx_n = image(dx.data_ptr<float>(), s, n), *dh_n = image(data_or_null(dh_prev), s, n);
      if (add_features) {
        features_grad_into(m.norm, s, dx_n);
        transposed<kGates, true, false>(D, kx.data_ptr<float>(), kh.data_ptr<float>(), s, dx_n, dh_n);
      } else {
        transposed<kGates, false, false>(D, kx.data_ptr<float>(), kh.data_ptr<float>(), s, dx_n, dh_n);
      }
      weight_grads<kGates>(D, x_n, h_n, s, mine);
    }
  });
  auto grads = sums.totals({{kGates, kTaps, s.c}, {kGates, kTaps, s.c}, {kGates, s.c}}, x.options());
  return {dx, dh_prev, dc_prev, grads[0], grads[1], grads[2]};
}

}  // namespace regnet

// Registered as torch operators (torch.ops.regnet.*), so that the profiler and dispatch modes see them.
TORCH_LIBRARY_FRAGMENT(regnet, m) {
  m.def("lstm_forward(Tensor x, Tensor h, Tensor c, Tensor kx, Tensor kh, Tensor bias, bool save, bool moments) "
        "-> Tensor[]");
  m.def("lstm_backward(Tensor dh, Tensor dc, Tensor[] gates, Tensor c_out, Tensor x, Tensor h, Tensor c, "
        "Tensor kx, Tensor kh, Tensor dB, Tensor h_out, Tensor coef, bool add_features) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(regnet, CPU, m) {
  m.impl("lstm_forward", &regnet::lstm_forward);
  m.impl("lstm_backward", &regnet::lstm_backward);
}
