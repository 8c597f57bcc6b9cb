// One ConvGRU step of the efficient gate form on a CPU (see depthwise.h): gates z, r from X and H, the
// candidate from X and r*H, then H = H_prev + z * (candidate - H_prev). The candidate's convolution reads
// r*H around each pixel, so a step is two passes per image: z, r and r*H first (r*H in L2), then the
// candidate and H.
#include <torch/library.h>

#include "norm.h"

namespace regnet {
namespace {

// One image's maps and kernels (null: a zero state, or gates not saved).
struct GruImage {
  const float *x, *h;
  float *z, *r, *rh, *candidate, *h_out;
};

struct GruKernels {
  const float *kx_zr, *kh_zr, *b_zr, *kx_c, *kh_c, *b_c;
};

void gru_image(const GruImage& m, const GruKernels& k, const Shape& s) {
  for_pixel_runs(s.h, s.w, s.c, [&](int64_t y, int64_t x, auto pixels, auto lanes, int64_t c0) {
    constexpr int P = decltype(pixels)::value;
    using T = decltype(lanes);
    T a[P][2];
    gate_sums<2, P, T>(m.x, m.h, k.kx_zr, k.kh_zr, k.b_zr, s, y, x, c0, a);
    for (int q = 0; q < P; ++q) {
      const int64_t p = s.at(y, x + q) + c0;
      const T r = sigmoid(a[q][1]);
      store(m.z + p, sigmoid(a[q][0]));
      store(m.r + p, r);
      if (m.h) store(m.rh + p, r * load<T>(m.h + p));
    }
  });
  for_pixel_runs(s.h, s.w, s.c, [&](int64_t y, int64_t x, auto pixels, auto lanes, int64_t c0) {
    constexpr int P = decltype(pixels)::value;
    using T = decltype(lanes);
    T a[P][1];
    gate_sums<1, P, T>(m.x, m.h ? m.rh : nullptr, k.kx_c, k.kh_c, k.b_c, s, y, x, c0, a);
    for (int q = 0; q < P; ++q) {
      const int64_t p = s.at(y, x + q) + c0;
      const T candidate = tanh_approx(a[q][0]), z = load<T>(m.z + p);
      if (m.candidate) store(m.candidate + p, candidate);
      if (m.h) {
        const T h = load<T>(m.h + p);
        store(m.h_out + p, h + z * (candidate - h));
      } else {
        store(m.h_out + p, z * candidate);
      }
    }
  });
}

// The maps one image's backward reads and writes, and its buffers: Dc [H*W, 1, C] and Dzr [H*W, 2, C] (the
// candidate's and z, r's pre-activation gradients), rh (r*H) and drh (its gradient).
struct GruGrads {
  const float *dh, *z, *r, *candidate, *x, *h;
  float *dx, *dh_prev, *Dc, *Dzr, *rh, *drh;
  NormGrad norm;  // H's gradient through the regulator's norm, when the step ran with it (see norm.h)
  bool add_features;  // dx starts as the concatenation's features half (the features are X)
};

void gru_image_backward(const GruGrads& m, const GruKernels& k, const Shape& s, double* sums) {
  const int64_t hw = s.h * s.w, nc = 2 * kTaps * s.c + s.c;
  for (int64_t p = 0; p < hw; ++p)
    for_blocks(s.c, [&](auto lanes, int64_t c0) {
      using T = decltype(lanes);
      const int64_t q = p * s.c + c0;
      T dh = m.dh ? load<T>(m.dh + q) : T{};
      if (m.norm.dB) dh += m.norm.template at<T>(s, p, c0);
      const T z = load<T>(m.z + q), candidate = load<T>(m.candidate + q);
      const T h = m.h ? load<T>(m.h + q) : T{};
      store(m.Dc + q, dh * z * (1.0f - candidate * candidate));
      store(m.Dzr + 2 * p * s.c + c0, dh * (candidate - h) * z * (1.0f - z));
      if (!m.h) return store(m.Dzr + (2 * p + 1) * s.c + c0, T{});
      store(m.dh_prev + q, dh * (1.0f - z));
      store(m.rh + q, load<T>(m.r + q) * h);
    });
  if (m.add_features) {
    features_grad_into(m.norm, s, m.dx);
    transposed<1, true, false>(m.Dc, k.kx_c, k.kh_c, s, m.dx, m.h ? m.drh : nullptr);
  } else {
    transposed<1, false, false>(m.Dc, k.kx_c, k.kh_c, s, m.dx, m.h ? m.drh : nullptr);
  }
  weight_grads<1>(m.Dc, m.x, m.h ? m.rh : nullptr, s, sums);
  for (int64_t p = 0; p < hw && m.h; ++p)
    for_blocks(s.c, [&](auto lanes, int64_t c0) {
      using T = decltype(lanes);
      const int64_t q = p * s.c + c0;
      const T drh = load<T>(m.drh + q), r = load<T>(m.r + q);
      store(m.Dzr + (2 * p + 1) * s.c + c0, drh * load<T>(m.h + q) * r * (1.0f - r));
      store(m.dh_prev + q, load<T>(m.dh_prev + q) + drh * r);
    });
  transposed<2, true, true>(m.Dzr, k.kx_zr, k.kh_zr, s, m.dx, m.dh_prev);
  weight_grads<2>(m.Dzr, m.x, m.h, s, sums + nc);
}

GruKernels kernels_of(const at::Tensor& kx_zr, const at::Tensor& kh_zr, const at::Tensor& b_zr,
                      const at::Tensor& kx_c, const at::Tensor& kh_c, const at::Tensor& b_c, const Shape& s) {
  check_kernels(kx_zr, b_zr, 2, s);
  check_kernels(kh_zr, at::Tensor(), 2, s);
  check_kernels(kx_c, b_c, 1, s);
  check_kernels(kh_c, at::Tensor(), 1, s);
  return {kx_zr.data_ptr<float>(), kh_zr.data_ptr<float>(), b_zr.defined() ? b_zr.data_ptr<float>() : nullptr,
          kx_c.data_ptr<float>(), kh_c.data_ptr<float>(), b_c.defined() ? b_c.data_ptr<float>() : nullptr};
}

}  // namespace

// Forward: (h), then, if `save`, z, r and the candidate (the backward's input), then, if `moments`, H's mean
// and biased variance per channel [2, C] (for the regulator's norm in training, see norm.h).
std::vector<at::Tensor> gru_forward(const at::Tensor& x, const at::Tensor& h, const at::Tensor& kx_zr,
                                    const at::Tensor& kh_zr, const at::Tensor& b_zr, const at::Tensor& kx_c,
                                    const at::Tensor& kh_c, const at::Tensor& b_c, bool save, bool moments) {
  const Shape s = shape_of(x);
  check_map(x, s);
  check_map(h, s);
  const GruKernels k = kernels_of(kx_zr, kh_zr, b_zr, kx_c, kh_c, b_c, s);
  std::vector<at::Tensor> out{empty_map(s, x)};
  for (int j = 0; j < 3 && save; ++j) out.push_back(empty_map(s, x));
  ImageMoments h_moments(s, moments);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    float* buffers = scratch(3 * s.map());  // z, r (when not saved) and r*H of one image
    for (int64_t n = begin; n < end; ++n) {
      GruImage m{image(x.data_ptr<float>(), s, n), image(data_or_null(h), s, n), buffers,
                 buffers + s.map(), buffers + 2 * s.map(), nullptr, image(out[0].data_ptr<float>(), s, n)};
      if (save) {
        m.z = image(out[1].data_ptr<float>(), s, n), m.r = image(out[2].data_ptr<float>(), s, n);
        m.candidate = image(out[3].data_ptr<float>(), s, n);
      }
      gru_image(m, k, s);
      if (moments) h_moments.add(m.h_out, n);
    }
  });
  if (moments) out.push_back(h_moments.result(x.options()));
  return out;
}

// Backward: (dx, dh_prev, dkx_zr, dkh_zr, db_zr, dkx_c, dkh_c, db_c); dh_prev is empty where the state was zero,
// and an empty dh stands for a zero gradient. With the regulator's norm (dB, the concatenation's gradient, not
// empty; see norm.h): H's gradient through it is added to dh, and with `add_features` (the features are X)
// dB's features half to dx.
std::vector<at::Tensor> gru_backward(const at::Tensor& dh, at::TensorList saved, const at::Tensor& x,
                                     const at::Tensor& h, const at::Tensor& kx_zr, const at::Tensor& kh_zr,
                                     const at::Tensor& kx_c, const at::Tensor& kh_c, const at::Tensor& dB,
                                     const at::Tensor& h_out, const at::Tensor& coef, bool add_features) {
  const Shape s = shape_of(x);
  TORCH_CHECK(saved.size() == 3 && (dh.numel() || dB.numel()), "z, r, the candidate and a gradient expected");
  for (const auto* t : {&dh, &x, &h, &saved[0], &saved[1], &saved[2]}) check_map(*t, s);
  check_norm(dB, h_out, coef, s);
  TORCH_CHECK(!add_features || dB.numel(), "the features' gradient comes with the concatenation's");
  const GruKernels k = kernels_of(kx_zr, kh_zr, at::Tensor(), kx_c, kh_c, at::Tensor(), s);
  auto dx = empty_map(s, x), dh_prev = h.numel() ? empty_map(s, x) : none_like(x);
  const int64_t nc = 2 * kTaps * s.c + s.c, nzr = 2 * (2 * kTaps * s.c) + 2 * s.c;
  ThreadSums sums(nc + nzr);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    float* b = scratch(6 * s.map());  // Dc, Dzr (two maps), rh, drh
    double* mine = sums.mine();
    for (int64_t n = begin; n < end; ++n) {
      const GruGrads m{image(data_or_null(dh), s, n), image(saved[0].data_ptr<float>(), s, n),
                       image(saved[1].data_ptr<float>(), s, n), image(saved[2].data_ptr<float>(), s, n),
                       image(x.data_ptr<float>(), s, n), image(data_or_null(h), s, n),
                       image(dx.data_ptr<float>(), s, n), image(data_or_null(dh_prev), s, n),
                       b, b + s.map(), b + 3 * s.map(), b + 4 * s.map(), norm_grad(dB, h_out, coef, s, n),
                       add_features};
      gru_image_backward(m, k, s, mine);
    }
  });
  const int64_t c = s.c;
  auto g = sums.totals({{1, kTaps, c}, {1, kTaps, c}, {1, c}, {2, kTaps, c}, {2, kTaps, c}, {2, c}}, x.options());
  return {dx, dh_prev, g[3], g[4], g[5], g[0], g[1], g[2]};
}

}  // namespace regnet

TORCH_LIBRARY_FRAGMENT(regnet, m) {
  m.def("gru_forward(Tensor x, Tensor h, Tensor kx_zr, Tensor kh_zr, Tensor b_zr, Tensor kx_c, Tensor kh_c, "
        "Tensor b_c, bool save, bool moments) -> Tensor[]");
  m.def("gru_backward(Tensor dh, Tensor[] saved, Tensor x, Tensor h, Tensor kx_zr, Tensor kh_zr, Tensor kx_c, "
        "Tensor kh_c, Tensor dB, Tensor h_out, Tensor coef, bool add_features) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(regnet, CPU, m) {
  m.impl("gru_forward", &regnet::gru_forward);
  m.impl("gru_backward", &regnet::gru_backward);
}
