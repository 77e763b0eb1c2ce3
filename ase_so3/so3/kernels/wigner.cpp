// The edge frame's Wigner-D blocks, fused per edge (see ase_so3/so3/cpu_kernels.py).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "simd.h"

namespace {

constexpr int64_t kChunk = 256;  // edges per product with the fold table

// The edge frame's Wigner-D blocks (edge_frame.EdgeWignerD.flat), per edge in cache:
//   n_j = cs . fold[:, j],  n'_j = cs . fold[:, T + j]        (cs: cos(k beta), sin(k beta))
//   d_j = n_j ca[m_j] + n'_j sa[m_j] sign_j                    (ca, sa: cos, sin of k alpha)
//   tilted edges: each block D^l <- D^l P^l                    (P^l fixed; offsets as for d)
template <typename T>
struct WignerEdge {
  const T* __restrict__ fold;  // [K, 2T]
  const int64_t* __restrict__ col_m;
  const T* __restrict__ col_sign;
  const T* __restrict__ chart;  // the P^l blocks, flattened like d
  const T* __restrict__ chart_t;  // and transposed
  const std::vector<int64_t>& offset;
  int64_t lmax, k_count, t;

  // out = blocks of a, each times q (P^l, or P^l^T from chart_t), rows as sums of q's rows
  void chart_product(const T* __restrict__ a, T* __restrict__ out, bool transposed) const {
    const T* q_all = transposed ? chart_t : chart;
    for (int64_t l = 1; l <= lmax; ++l) {
      const int64_t n = 2 * l + 1;
      const T* __restrict__ al = a + offset[l];
      const T* __restrict__ q = q_all + offset[l];
      T* __restrict__ ol = out + offset[l];
      for (int64_t i = 0; i < n; ++i) {
        T* __restrict__ row = ol + i * n;
        for (int64_t b = 0; b < n; ++b) row[b] = al[i * n] * q[b];
        for (int64_t c = 1; c < n; ++c) {
          const T w = al[i * n + c];
          for (int64_t b = 0; b < n; ++b) row[b] += w * q[c * n + b];
        }
      }
    }
  }

  // Per column of each block (m and sign depend on the column only): cav = ca[m],
  // sav = sa[m] sign, at l^2 + b for column b of D^l.
  void columns(const T* ca, const T* sa, T* __restrict__ cav, T* __restrict__ sav) const {
    for (int64_t l = 1; l <= lmax; ++l)
      for (int64_t b = 0; b < 2 * l + 1; ++b) {
        const int64_t j = offset[l] + b;
        cav[l * l + b] = ca[col_m[j]];
        sav[l * l + b] = sa[col_m[j]] * col_sign[j];
      }
  }

  // nrow: [n | n'] of this edge; work: T + 2 (lmax+1)^2 entries
  void forward(const T* ca, const T* sa, bool tilted, const T* nrow, T* d, T* work) const {
    const T* n = nrow;
    const T* nm = nrow + t;
    T* d0 = tilted ? work : d;
    T* cav = work + t;
    T* sav = cav + (lmax + 1) * (lmax + 1);
    columns(ca, sa, cav, sav);
    for (int64_t l = 1; l <= lmax; ++l) {
      const int64_t w = 2 * l + 1;
      const T* __restrict__ cl = cav + l * l;
      const T* __restrict__ sl = sav + l * l;
      for (int64_t a = 0; a < w; ++a) {
        const int64_t j0 = offset[l] + a * w;
        for (int64_t b = 0; b < w; ++b) d0[j0 + b] = n[j0 + b] * cl[b] + nm[j0 + b] * sl[b];
      }
    }
    if (tilted) chart_product(d0, d, false);
  }

  // nrow: [n | n'] of this edge; grow: gets [dL/dn | dL/dn'] (its product with fold^T is the
  // gradient of cs, done per chunk of edges); work: T + 4 (lmax+1)^2 entries
  void backward(const T* ca, const T* sa, bool tilted, const T* gd, const T* nrow, T* grow,
                T* gca, T* gsa, T* work) const {
    const int64_t sq = (lmax + 1) * (lmax + 1);
    const T* n = nrow;
    const T* nm = nrow + t;
    T* gn = grow;
    T* gnm = grow + t;
    T* g0 = work;
    T* cav = work + t;
    T* sav = cav + sq;
    T* colc = sav + sq;  // per column: sum over rows of g0 n (then of g0 n')
    T* cols = colc + sq;
    if (tilted) {
      chart_product(gd, g0, true);
    } else {
      for (int64_t j = 0; j < t; ++j) g0[j] = gd[j];
    }
    columns(ca, sa, cav, sav);
    for (int64_t j = 0; j < sq; ++j) colc[j] = cols[j] = T(0);
    for (int64_t l = 1; l <= lmax; ++l) {
      const int64_t w = 2 * l + 1;
      const T* __restrict__ cl = cav + l * l;
      const T* __restrict__ sl = sav + l * l;
      T* __restrict__ accc = colc + l * l;
      T* __restrict__ accs = cols + l * l;
      for (int64_t a = 0; a < w; ++a) {
        const int64_t j0 = offset[l] + a * w;
        for (int64_t b = 0; b < w; ++b) {
          const T g = g0[j0 + b];
          gn[j0 + b] = g * cl[b];
          gnm[j0 + b] = g * sl[b];
          accc[b] += g * n[j0 + b];
          accs[b] += g * nm[j0 + b];
        }
      }
    }
    for (int64_t m = 0; m <= lmax; ++m) gca[m] = gsa[m] = T(0);
    for (int64_t l = 1; l <= lmax; ++l)
      for (int64_t b = 0; b < 2 * l + 1; ++b) {
        const int64_t j = offset[l] + b;
        gca[col_m[j]] += colc[l * l + b];
        gsa[col_m[j]] += cols[l * l + b] * col_sign[j];
      }
  }
};

void check_wigner(const torch::Tensor& cs, const torch::Tensor& ca, const torch::Tensor& sa,
                  const torch::Tensor& tilted, const torch::Tensor& fold,
                  const torch::Tensor& col_m, const torch::Tensor& col_sign,
                  const torch::Tensor& chart, const torch::Tensor& chart_t,
                  const torch::Tensor& offsets, int64_t lmax) {
  const int64_t e = cs.size(0);
  TORCH_CHECK(cs.device().is_cpu(), "Wigner kernels are CPU-only");
  TORCH_CHECK(cs.dim() == 2 && cs.size(1) == 2 * lmax + 1 && ca.sizes() == sa.sizes() &&
                  ca.dim() == 2 && ca.size(0) == e && ca.size(1) == lmax + 1,
              "expected cs [E, 2 lmax + 1] and ca, sa [E, lmax + 1]");
  TORCH_CHECK(tilted.scalar_type() == torch::kBool && tilted.numel() == e, "tilted: [E] bool");
  const int64_t t = col_m.numel();
  TORCH_CHECK(fold.dim() == 2 && fold.size(0) == 2 * lmax + 1 && fold.size(1) == 2 * t &&
                  col_sign.numel() == t && chart.numel() == t && chart_t.numel() == t &&
                  offsets.numel() == lmax + 1,
              "Wigner tables do not match lmax");
  for (const auto* a : {&ca, &sa, &fold, &col_sign, &chart, &chart_t})
    TORCH_CHECK(a->scalar_type() == cs.scalar_type(), "Wigner inputs differ in dtype");
  TORCH_CHECK(col_m.scalar_type() == torch::kLong && offsets.scalar_type() == torch::kLong,
              "col_m and offsets must be int64");
}

}  // namespace

torch::Tensor wigner_forward(torch::Tensor cs, torch::Tensor ca, torch::Tensor sa,
                             torch::Tensor tilted, torch::Tensor fold, torch::Tensor col_m,
                             torch::Tensor col_sign, torch::Tensor chart, torch::Tensor chart_t,
                             torch::Tensor offsets, int64_t lmax) {
  check_wigner(cs, ca, sa, tilted, fold, col_m, col_sign, chart, chart_t, offsets, lmax);
  cs = cs.contiguous(); ca = ca.contiguous(); sa = sa.contiguous(); tilted = tilted.contiguous();
  fold = fold.contiguous(); col_m = col_m.contiguous(); col_sign = col_sign.contiguous();
  chart = chart.contiguous(); chart_t = chart_t.contiguous();
  const std::vector<int64_t> offset(offsets.data_ptr<int64_t>(),
                                    offsets.data_ptr<int64_t>() + offsets.numel());
  const int64_t e_count = cs.size(0), t = col_m.numel(), kc = cs.size(1), lc = lmax + 1;
  auto d = torch::empty({e_count, t}, cs.options());
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "wigner_forward", [&] {
    const WignerEdge<scalar_t> edge{fold.data_ptr<scalar_t>(), col_m.data_ptr<int64_t>(),
                                    col_sign.data_ptr<scalar_t>(), chart.data_ptr<scalar_t>(),
                                    chart_t.data_ptr<scalar_t>(), offset, lmax, kc, t};
    const scalar_t* cap = ca.data_ptr<scalar_t>();
    const scalar_t* sap = sa.data_ptr<scalar_t>();
    const bool* tp = tilted.data_ptr<bool>();
    scalar_t* dp = d.data_ptr<scalar_t>();
    // n, n' of a chunk of edges as one product with the fixed fold (a GEMM that keeps fold in
    // cache), then per edge the rest
    // chunks at fixed edges, whatever the thread count: results do not depend on it
    at::parallel_for(0, (e_count + kChunk - 1) / kChunk, 1, [&](int64_t first, int64_t last) {
      std::vector<scalar_t> work(t + 2 * (lmax + 1) * (lmax + 1));
      auto buffer = torch::empty({kChunk, 2 * t}, cs.options());  // reused: no page faults
      for (int64_t start = first * kChunk; start < std::min(last * kChunk, e_count);
           start += kChunk) {
        const int64_t len = std::min(kChunk, e_count - start);
        auto nn = buffer.narrow(0, 0, len);
        at::mm_out(nn, cs.narrow(0, start, len), fold);
        const scalar_t* np = nn.data_ptr<scalar_t>();
        for (int64_t i = 0; i < len; ++i) {
          const int64_t e = start + i;
          edge.forward(cap + e * lc, sap + e * lc, tp[e], np + i * 2 * t, dp + e * t,
                       work.data());
        }
      }
    });
  });
  return d;
}

// Gradients of wigner_forward's d with respect to cs, ca and sa, from gd [E, T].
std::vector<torch::Tensor> wigner_backward(torch::Tensor cs, torch::Tensor ca, torch::Tensor sa,
                                           torch::Tensor tilted, torch::Tensor fold,
                                           torch::Tensor col_m, torch::Tensor col_sign,
                                           torch::Tensor chart, torch::Tensor chart_t,
                                           torch::Tensor offsets, int64_t lmax,
                                           torch::Tensor gd) {
  check_wigner(cs, ca, sa, tilted, fold, col_m, col_sign, chart, chart_t, offsets, lmax);
  TORCH_CHECK(gd.dim() == 2 && gd.size(0) == cs.size(0) && gd.size(1) == col_m.numel() &&
                  gd.scalar_type() == cs.scalar_type(), "gd must be [E, T] like d");
  cs = cs.contiguous(); ca = ca.contiguous(); sa = sa.contiguous(); tilted = tilted.contiguous();
  fold = fold.contiguous(); col_m = col_m.contiguous(); col_sign = col_sign.contiguous();
  chart = chart.contiguous(); chart_t = chart_t.contiguous(); gd = gd.contiguous();
  const std::vector<int64_t> offset(offsets.data_ptr<int64_t>(),
                                    offsets.data_ptr<int64_t>() + offsets.numel());
  const int64_t e_count = cs.size(0), t = col_m.numel(), kc = cs.size(1), lc = lmax + 1;
  auto gcs = torch::empty_like(cs), gca = torch::empty_like(ca), gsa = torch::empty_like(sa);
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "wigner_backward", [&] {
    const WignerEdge<scalar_t> edge{fold.data_ptr<scalar_t>(), col_m.data_ptr<int64_t>(),
                                    col_sign.data_ptr<scalar_t>(), chart.data_ptr<scalar_t>(),
                                    chart_t.data_ptr<scalar_t>(), offset, lmax, kc, t};
    const scalar_t* cap = ca.data_ptr<scalar_t>();
    const scalar_t* sap = sa.data_ptr<scalar_t>();
    const scalar_t* gdp = gd.data_ptr<scalar_t>();
    const bool* tp = tilted.data_ptr<bool>();
    scalar_t* gcap = gca.data_ptr<scalar_t>();
    scalar_t* gsap = gsa.data_ptr<scalar_t>();
    at::parallel_for(0, (e_count + kChunk - 1) / kChunk, 1, [&](int64_t first, int64_t last) {
      std::vector<scalar_t> work(t + 4 * (lmax + 1) * (lmax + 1));
      auto buffers = torch::empty({2, kChunk, 2 * t}, cs.options());  // reused: no page faults
      for (int64_t start = first * kChunk; start < std::min(last * kChunk, e_count);
           start += kChunk) {
        const int64_t len = std::min(kChunk, e_count - start);
        auto nn = buffers[0].narrow(0, 0, len);
        auto gg = buffers[1].narrow(0, 0, len);
        at::mm_out(nn, cs.narrow(0, start, len), fold);
        const scalar_t* np = nn.data_ptr<scalar_t>();
        scalar_t* gp = gg.data_ptr<scalar_t>();
        for (int64_t i = 0; i < len; ++i) {
          const int64_t e = start + i;
          edge.backward(cap + e * lc, sap + e * lc, tp[e], gdp + e * t, np + i * 2 * t,
                        gp + i * 2 * t, gcap + e * lc, gsap + e * lc, work.data());
        }
        auto out = gcs.narrow(0, start, len);
        at::mm_out(out, gg, fold.t());
      }
    });
  });
  return {gcs, gca, gsa};
}

