// The regulator's BN + ReLU pairs (see norm.h): on H, with the fusion's 1x1 convolution of [features,
// ReLU(BN(H))], and after the fusion; forward passes given the per-channel scale and shift, and their backward.
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

// One image's concatenation [H*W, 2C] = [features, ReLU(scale * h + shift)] per pixel, into buffer (L2).
void concat_image(const float* f, const float* h, const float* scale, const float* shift, const Shape& s,
                  float* buffer) {
  for (int64_t p = 0; p < s.h * s.w; ++p)
    for_blocks(s.c, [&](auto lanes, int64_t c0) {
      using T = decltype(lanes);
      store(buffer + p * 2 * s.c + c0, load<T>(f + p * s.c + c0));
      store(buffer + p * 2 * s.c + s.c + c0,
            relu(load<T>(scale + c0) * load<T>(h + p * s.c + c0) + load<T>(shift + c0)));
    });
}

}  // namespace

bool has_gemm() { return sgemm_ != nullptr; }

// F = fuse(cat[features, ReLU(scale * h + shift)]), the regulated block's 1x1 fusion (weight [C, 2C], bias [C]
// or empty), image by image: the concatenation is built in L2 and never written out. Then, if `moments`, F's
// mean and biased variance [2, C] (for bn_fuse's batch statistics).
std::vector<at::Tensor> fuse_forward(const at::Tensor& features, const at::Tensor& h, const at::Tensor& scale,
                                     const at::Tensor& shift, const at::Tensor& weight, const at::Tensor& bias,
                                     bool moments) {
  const Shape s = shape_of(h);
  check_map(features, s);
  check_map(h, s);
  check_vectors({&scale, &shift}, s);
  if (bias.numel()) check_vectors({&bias}, s);
  check_fusion_weight(weight, s);
  auto F = empty_map(s, h);
  ImageMoments f_moments(s, moments);
  const int64_t hw = s.h * s.w;
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    float* buffer = scratch(hw * 2 * s.c);
    for (int64_t n = begin; n < end; ++n) {
      concat_image(image(features.data_ptr<float>(), s, n), image(h.data_ptr<float>(), s, n),
                   scale.data_ptr<float>(), shift.data_ptr<float>(), s, buffer);
      float* f = image(F.data_ptr<float>(), s, n);
      for (int64_t p = 0; p < hw && bias.numel(); ++p) std::memcpy(f + p * s.c, bias.data_ptr<float>(), s.c * 4);
      // Column-major, F^T [C, HW] = W [C, 2C] . B^T [2C, HW].
      gemm('T', 'N', s.c, hw, 2 * s.c, weight.data_ptr<float>(), 2 * s.c, buffer, 2 * s.c, bias.numel() ? 1.0f : 0.0f,
           f, s.c);
      if (moments) f_moments.add(f, n);
    }
  });
  std::vector<at::Tensor> out{F};
  if (moments) out.push_back(f_moments.result(h.options()));
  return out;
}

// fuse_forward's backward from F's gradient dF: (dB, the concatenation's gradient [N, 2C, H, W]; dW [C, 2C];
// d_bias [C]; and the norm's sums [2, C] of g and g * (h - mean), g = dB's H half where the ReLU passed).
std::vector<at::Tensor> fuse_backward(const at::Tensor& dF, const at::Tensor& features, const at::Tensor& h,
                                      const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
                                      const at::Tensor& weight) {
  const Shape s = shape_of(h);
  for (const auto* t : {&dF, &features, &h}) check_map(*t, s);
  check_vectors({&scale, &shift, &mean}, s);
  check_fusion_weight(weight, s);
  auto dB = at::empty({s.n, 2 * s.c, s.h, s.w}, h.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t hw = s.h * s.w, nw = 2 * s.c * s.c;
  const float *a = scale.data_ptr<float>(), *b = shift.data_ptr<float>(), *m = mean.data_ptr<float>();
  ThreadSums sums(nw + 3 * s.c);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    float* buffer = scratch(hw * 2 * s.c + nw);  // the image's concatenation, then its dW
    double* mine = sums.mine();
    for (int64_t n = begin; n < end; ++n) {
      const float *d = image(dF.data_ptr<float>(), s, n), *hv = image(h.data_ptr<float>(), s, n);
      float* dBn = dB.data_ptr<float>() + n * 2 * s.map();
      concat_image(image(features.data_ptr<float>(), s, n), hv, a, b, s, buffer);
      // Column-major: dB^T [2C, HW] = W^T [2C, C] . dF^T [C, HW]; dW^T [2C, C] = B^T [2C, HW] . dF [HW, C].
      gemm('N', 'N', 2 * s.c, hw, s.c, weight.data_ptr<float>(), 2 * s.c, d, s.c, 0.0f, dBn, 2 * s.c);
      gemm('N', 'T', 2 * s.c, s.c, hw, buffer, 2 * s.c, d, s.c, 0.0f, buffer + hw * 2 * s.c, 2 * s.c);
      for (int64_t j = 0; j < nw; ++j) mine[j] += buffer[hw * 2 * s.c + j];
      for_blocks(s.c, [&](auto lanes, int64_t c0) {  // the bias's gradient, the sum of dF
        using T = decltype(lanes);
        T total{};
        for (int64_t p = 0; p < hw; ++p) total += load<T>(d + p * s.c + c0);
        add_lanes(mine + nw + c0, total);
      });
      add_norm_sums(norm_grad(dB, h, at::Tensor(), s, n), a, b, m, s, mine + nw + s.c);  // dB's image in L2
    }
  });
  auto g = sums.totals({{s.c, 2 * s.c}, {s.c}, {2, s.c}}, h.options());
  return {dB, g[0], g[1], g[2]};
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

// [2, C]: the mean and biased variance of x per channel over N*H*W (see ImageMoments).
at::Tensor channel_moments(const at::Tensor& x) {
  const Shape s = shape_of(x);
  check_map(x, s);
  ImageMoments moments(s, true);
  at::parallel_for(0, s.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) moments.add(image(x.data_ptr<float>(), s, n), n);
  });
  return moments.result(x.options());
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
    for (int64_t n = begin; n < end; ++n) add_norm_sums(norm_grad(d, h, at::Tensor(), s, n), a, b, m, s, sums.mine());
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
  m.def("has_gemm() -> bool");
  m.def("fuse_forward(Tensor features, Tensor h, Tensor scale, Tensor shift, Tensor weight, Tensor bias, "
        "bool moments) -> Tensor[]");
  m.def("fuse_backward(Tensor dF, Tensor features, Tensor h, Tensor scale, Tensor shift, Tensor mean, "
        "Tensor weight) -> Tensor[]");
  m.def("norm_relu(Tensor x, Tensor scale, Tensor shift) -> Tensor");
  m.def("channel_moments(Tensor x) -> Tensor");
  m.def("norm_relu_sums(Tensor d, Tensor h, Tensor scale, Tensor shift, Tensor mean) -> Tensor");
  m.def("norm_relu_backward(Tensor dy, Tensor x, Tensor coef) -> Tensor");
}

TORCH_LIBRARY_IMPL(regnet, CompositeExplicitAutograd, m) { m.impl("has_gemm", &regnet::has_gemm); }

TORCH_LIBRARY_IMPL(regnet, CPU, m) {
  m.impl("fuse_forward", &regnet::fuse_forward);
  m.impl("fuse_backward", &regnet::fuse_backward);
  m.impl("norm_relu", &regnet::norm_relu);
  m.impl("channel_moments", &regnet::channel_moments);
  m.impl("norm_relu_sums", &regnet::norm_relu_sums);
  m.impl("norm_relu_backward", &regnet::norm_relu_backward);
}
