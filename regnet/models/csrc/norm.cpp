// The regulator's BN + ReLU pairs (see norm.h): on H, fused with the concatenation the fusion reads, and after
// the fusion; forward passes given the per-channel scale and shift, and the backward's sums and pass.
#include <torch/library.h>

#include "norm.h"

namespace regnet {
namespace {

void check_vectors(std::initializer_list<const at::Tensor*> vectors, const Shape& s) {
  for (const auto* t : vectors)
    TORCH_CHECK(t->is_contiguous() && t->numel() == s.c && t->dtype() == at::kFloat, "per-channel vectors must be [C]");
}

// body(p, T{}, c0) over every pixel p of the batch and its channel blocks, pixels spread over torch's threads.
template <class Body>
void for_all_pixels(const Shape& s, Body&& body) {
  at::parallel_for(0, s.n * s.h * s.w, 256, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) for_blocks(s.c, [&](auto lanes, int64_t c0) { body(p, lanes, c0); });
  });
}

template <class T>
ALWAYS_INLINE T relu(const T& y) {
  return y > T{} ? y : T{};
}

}  // namespace

// B [N, 2C, H, W] (channels-last) = [features, ReLU(scale * h + shift)] per pixel.
at::Tensor relu_cat(const at::Tensor& features, const at::Tensor& h, const at::Tensor& scale,
                    const at::Tensor& shift) {
  const Shape s = shape_of(h);
  check_map(features, s);
  check_map(h, s);
  check_vectors({&scale, &shift}, s);
  auto B = at::empty({s.n, 2 * s.c, s.h, s.w}, h.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float *f = features.data_ptr<float>(), *hv = h.data_ptr<float>();
  const float *a = scale.data_ptr<float>(), *b = shift.data_ptr<float>();
  float* out = B.data_ptr<float>();
  for_all_pixels(s, [&](int64_t p, auto lanes, int64_t c0) {
    using T = decltype(lanes);
    store(out + p * 2 * s.c + c0, load<T>(f + p * s.c + c0));
    store(out + p * 2 * s.c + s.c + c0, relu(load<T>(a + c0) * load<T>(hv + p * s.c + c0) + load<T>(b + c0)));
  });
  return B;
}

// ReLU(scale * x + shift): a BN + ReLU's forward.
at::Tensor norm_relu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  const Shape s = shape_of(x);
  check_map(x, s);
  check_vectors({&scale, &shift}, s);
  auto y = empty_map(s, x);
  const float *xv = x.data_ptr<float>(), *a = scale.data_ptr<float>(), *b = shift.data_ptr<float>();
  float* out = y.data_ptr<float>();
  for_all_pixels(s, [&](int64_t p, auto lanes, int64_t c0) {
    using T = decltype(lanes);
    store(out + p * s.c + c0, relu(load<T>(a + c0) * load<T>(xv + p * s.c + c0) + load<T>(b + c0)));
  });
  return y;
}

// [2, C]: the mean and biased variance of x per channel over N*H*W (see add_moments).
at::Tensor channel_moments(const at::Tensor& x) {
  const Shape s = shape_of(x);
  check_map(x, s);
  ThreadSums sums(3 * s.c);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) add_moments(image(x.data_ptr<float>(), s, n), s, sums.mine());
  });
  return moments_of(sums, s, x.options());
}

// [2, C]: the sums over N*H*W of g and of g * (h - mean), g = d's last C channels where scale * h + shift > 0
// (d: a BN + ReLU's output gradient, or the concatenation's).
at::Tensor norm_relu_sums(const at::Tensor& d, const at::Tensor& h, const at::Tensor& scale,
                          const at::Tensor& shift, const at::Tensor& mean) {
  const Shape s = shape_of(h);
  check_map(h, s);
  check_concat(d, s);
  check_vectors({&scale, &shift, &mean}, s);
  const float *a = scale.data_ptr<float>(), *b = shift.data_ptr<float>(), *m = mean.data_ptr<float>();
  ThreadSums sums(2 * s.c);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    double* mine = sums.mine();
    for (int64_t n = begin; n < end; ++n) {
      const NormGrad g = norm_grad(d, h, at::Tensor(), s, n);
      for_blocks(s.c, [&](auto lanes, int64_t c0) {
        using T = decltype(lanes);
        T total{}, centred{};
        for (int64_t p = 0; p < s.h * s.w; ++p) {
          const T x = load<T>(g.h + p * s.c + c0), dy = load<T>(g.dB + p * g.stride + c0);
          const T passed = load<T>(a + c0) * x + load<T>(b + c0) > T{} ? dy : T{};
          total += passed;
          centred += passed * (x - load<T>(m + c0));
        }
        add_lanes(mine + c0, total);
        add_lanes(mine + s.c + c0, centred);
      });
    }
  });
  return sums.totals({{2, s.c}}, h.options())[0];
}

// x's gradient through a BN + ReLU from its output's gradient dy: a plain map's, or the concatenation's (whose
// last C channels are the BN + ReLU's); see NormGrad.
at::Tensor norm_relu_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& coef) {
  const Shape s = shape_of(x);
  TORCH_CHECK(dy.numel(), "the output's gradient must not be empty");
  check_norm(dy, x, coef, s);
  auto dx = empty_map(s, x);
  const NormGrad g = norm_grad(dy, x, coef, s, 0);
  float* out = dx.data_ptr<float>();
  for_all_pixels(s, [&](int64_t p, auto lanes, int64_t c0) {
    store(out + p * s.c + c0, g.template at<decltype(lanes)>(s, p, c0));
  });
  return dx;
}

}  // namespace regnet

TORCH_LIBRARY_FRAGMENT(regnet, m) {
  m.def("relu_cat(Tensor features, Tensor h, Tensor scale, Tensor shift) -> Tensor");
  m.def("norm_relu(Tensor x, Tensor scale, Tensor shift) -> Tensor");
  m.def("channel_moments(Tensor x) -> Tensor");
  m.def("norm_relu_sums(Tensor d, Tensor h, Tensor scale, Tensor shift, Tensor mean) -> Tensor");
  m.def("norm_relu_backward(Tensor dy, Tensor x, Tensor coef) -> Tensor");
}

TORCH_LIBRARY_IMPL(regnet, CPU, m) {
  m.impl("relu_cat", &regnet::relu_cat);
  m.impl("norm_relu", &regnet::norm_relu);
  m.impl("channel_moments", &regnet::channel_moments);
  m.impl("norm_relu_sums", &regnet::norm_relu_sums);
  m.impl("norm_relu_backward", &regnet::norm_relu_backward);
}
