// Per-edge rotation into and out of the edge frame, for CPU tensors (see ase_so3/so3/cpu_kernels.py).
//
// d:      [E, T] Wigner-D blocks of degrees 1..lmax, flattened row-major one after another
//         (D^0 = 1 is implicit); block l starts at offset[l] and is (2l+1) x (2l+1).
// rows:   [R, 4]: for each edge-frame row r (m-major order), its degree l, its row a in D^l,
//         its m-block k and its row within that block.
// blocks: the edge-frame features as m-blocks [E, rows_k, C] (separate tensors, as the SO(2)
//         maps use them: no concatenation or split on either side).
// Each edge's work (a few kB) stays in cache: no per-degree products, no reorder copies.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

#include "simd.h"

namespace {

struct Layout {
  std::vector<int64_t> degree, row, block, local, offset, block_rows;
  std::vector<std::vector<int64_t>> rows_of;  // per degree, its edge-frame rows
  int64_t lmax = 0, width = 1;
};

Layout layout(const torch::Tensor& rows, const torch::Tensor& offsets, int64_t lmax) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(1) == 4 && rows.scalar_type() == torch::kLong,
              "rows must be a [R, 4] int64 table");
  auto r = rows.contiguous();
  auto o = offsets.contiguous();
  Layout out;
  out.lmax = lmax;
  out.width = (lmax + 1) * (lmax + 1);
  const int64_t n = r.size(0);
  const int64_t* p = r.data_ptr<int64_t>();
  out.rows_of.resize(lmax + 1);
  for (int64_t i = 0; i < n; ++i) {
    out.degree.push_back(p[4 * i]);
    out.row.push_back(p[4 * i + 1]);
    out.block.push_back(p[4 * i + 2]);
    out.local.push_back(p[4 * i + 3]);
    TORCH_CHECK(out.degree[i] >= 0 && out.degree[i] <= lmax, "row degree out of range");
    out.rows_of[out.degree[i]].push_back(i);
    if (static_cast<int64_t>(out.block_rows.size()) <= out.block[i])
      out.block_rows.resize(out.block[i] + 1, 0);
    out.block_rows[out.block[i]] += 1;
  }
  out.offset.assign(o.data_ptr<int64_t>(), o.data_ptr<int64_t>() + o.size(0));
  TORCH_CHECK(static_cast<int64_t>(out.offset.size()) == lmax + 1, "offsets must have lmax + 1");
  return out;
}

// Checks d, the dense features x [E, (lmax+1)^2, C] and the m-blocks; returns C.
int64_t check(const Layout& lay, const torch::Tensor& d, const torch::Tensor& x,
              const std::vector<torch::Tensor>& blocks) {
  TORCH_CHECK(d.device().is_cpu() && x.device().is_cpu(), "rotation kernels are CPU-only");
  TORCH_CHECK(d.dim() == 2 && x.dim() == 3 && d.size(0) == x.size(0),
              "expected d [E, T] and features [E, rows, C] with the same E");
  TORCH_CHECK(x.size(1) == lay.width, "features have ", x.size(1), " rows, expected ", lay.width);
  TORCH_CHECK(d.scalar_type() == x.scalar_type(), "d and features differ in dtype");
  TORCH_CHECK(blocks.size() == lay.block_rows.size(), "expected ", lay.block_rows.size(),
              " m-blocks, got ", blocks.size());
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto& b = blocks[k];
    TORCH_CHECK(b.device().is_cpu() && b.scalar_type() == x.scalar_type() && b.dim() == 3 &&
                    b.size(0) == x.size(0) && b.size(1) == lay.block_rows[k] &&
                    b.size(2) == x.size(2) && b.is_contiguous(),
                "m-block ", k, " must be a contiguous [E, ", lay.block_rows[k], ", C] tensor");
  }
  return x.size(2);
}

// The pointer to each edge-frame row of edge e.
template <typename T>
struct RowPointers {
  const Layout& lay;
  std::vector<T*> bases;
  int64_t c;
  void fill(int64_t e, T** out) const {
    for (size_t r = 0; r < lay.block.size(); ++r) {
      const int64_t k = lay.block[r];
      out[r] = bases[k] + (e * lay.block_rows[k] + lay.local[r]) * c;
    }
  }
};

// The per-edge loops: where the channel count C is one of the common widths, the channels of
// a row are held in vector registers; otherwise plain loops.
template <typename T, int64_t CT>
struct Edge {
  using S = Simd<T>;
  using V = typename S::V;
  static constexpr int64_t NV = CT / S::width;  // vectors per row (0: plain loops)
  const Layout& lay;
  int64_t c;

  // o[r] = D^l[a_r] . x^l for every row r (degree 0: o = x^0 if unit0, else 0)
  void rotate_in(const T* __restrict__ d, const T* __restrict__ x, T* const* o,
                 bool unit0) const {
    const int64_t n_rows = static_cast<int64_t>(lay.degree.size());
    for (int64_t r = 0; r < n_rows; ++r) {
      const int64_t l = lay.degree[r], n = 2 * l + 1;
      const T* __restrict__ xl = x + l * l * c;
      T* __restrict__ out = o[r];
      if (l == 0) {
        for (int64_t k = 0; k < c; ++k) out[k] = unit0 ? xl[k] : T(0);
        continue;
      }
      const T* __restrict__ drow = d + lay.offset[l] + lay.row[r] * n;
      if constexpr (NV > 0) {
        V acc[NV];
        for (int64_t j = 0; j < NV; ++j) acc[j] = drow[0] * S::load(xl + j * S::width);
        for (int64_t b = 1; b < n; ++b) {
          const T w = drow[b];
          for (int64_t j = 0; j < NV; ++j) acc[j] += w * S::load(xl + b * CT + j * S::width);
        }
        for (int64_t j = 0; j < NV; ++j) S::store(out + j * S::width, acc[j]);
      } else {
        for (int64_t k = 0; k < c; ++k) out[k] = drow[0] * xl[k];
        for (int64_t b = 1; b < n; ++b)
          for (int64_t k = 0; k < c; ++k) out[k] += drow[b] * xl[b * c + k];
      }
    }
  }

  // o^l[b] = sum over kept rows r of degree l of D^l[a_r, b] y[r]
  void rotate_out(const T* __restrict__ d, T* const* y, T* __restrict__ o, bool unit0) const {
    for (int64_t l = 0; l <= lay.lmax; ++l) {
      const auto& rs = lay.rows_of[l];
      const int64_t n = 2 * l + 1;
      T* __restrict__ ol = o + l * l * c;
      if (l == 0) {
        const T* __restrict__ y0 = y[rs[0]];
        for (int64_t k = 0; k < c; ++k) ol[k] = unit0 ? y0[k] : T(0);
        continue;
      }
      const T* __restrict__ dl = d + lay.offset[l];
      for (int64_t b = 0; b < n; ++b) {
        T* __restrict__ out = ol + b * c;
        if constexpr (NV > 0) {
          V acc[NV] = {};
          for (size_t i = 0; i < rs.size(); ++i) {
            const T w = dl[lay.row[rs[i]] * n + b];
            const T* __restrict__ yr = y[rs[i]];
            for (int64_t j = 0; j < NV; ++j) acc[j] += w * S::load(yr + j * S::width);
          }
          for (int64_t j = 0; j < NV; ++j) S::store(out + j * S::width, acc[j]);
        } else {
          for (int64_t k = 0; k < c; ++k) out[k] = T(0);
          for (size_t i = 0; i < rs.size(); ++i) {
            const T w = dl[lay.row[rs[i]] * n + b];
            const T* __restrict__ yr = y[rs[i]];
            for (int64_t k = 0; k < c; ++k) out[k] += w * yr[k];
          }
        }
      }
    }
  }

  // gd[offset_l + a_r n + b] = g[r] . x^l[b]; rows of D^l that are not kept stay 0
  void grad_d(T* const* g, const T* __restrict__ x, T* __restrict__ gd) const {
    const int64_t n_rows = static_cast<int64_t>(lay.degree.size());
    for (int64_t r = 0; r < n_rows; ++r) {
      const int64_t l = lay.degree[r], n = 2 * l + 1;
      if (l == 0) continue;
      const T* __restrict__ gr = g[r];
      const T* __restrict__ xl = x + l * l * c;
      T* __restrict__ out = gd + lay.offset[l] + lay.row[r] * n;
      if constexpr (NV > 0) {
        V gv[NV];
        for (int64_t j = 0; j < NV; ++j) gv[j] = S::load(gr + j * S::width);
        for (int64_t b = 0; b < n; ++b) {
          V acc = gv[0] * S::load(xl + b * CT);
          for (int64_t j = 1; j < NV; ++j) acc += gv[j] * S::load(xl + b * CT + j * S::width);
          out[b] = S::sum(acc);
        }
      } else {
        for (int64_t b = 0; b < n; ++b) {
          T acc = 0;
          for (int64_t k = 0; k < c; ++k) acc += gr[k] * xl[b * c + k];
          out[b] = acc;
        }
      }
    }
  }
};

template <typename T, typename F>
void for_channels(int64_t c, const Layout& lay, F&& f) {
  switch (c) {
    case 8: f(Edge<T, 8>{lay, c}); break;
    case 16: f(Edge<T, 16>{lay, c}); break;
    case 32: f(Edge<T, 32>{lay, c}); break;
    case 64: f(Edge<T, 64>{lay, c}); break;
    default: f(Edge<T, 0>{lay, c}); break;
  }
}

// Runs body(edge, e, row_pointers) for every edge, in parallel chunks.
template <typename T, typename F>
void each_edge(const Layout& lay, int64_t e_count, int64_t c, std::vector<T*> bases, F&& body) {
  const RowPointers<T> pointers{lay, std::move(bases), c};
  for_channels<T>(c, lay, [&](auto edge) {
    at::parallel_for(0, e_count, 256, [&](int64_t begin, int64_t end) {
      std::vector<T*> rowp(lay.block.size());
      for (int64_t e = begin; e < end; ++e) {
        pointers.fill(e, rowp.data());
        body(edge, e, rowp.data());
      }
    });
  });
}

template <typename T>
std::vector<T*> bases_of(const std::vector<torch::Tensor>& blocks) {
  std::vector<T*> out;
  for (const auto& b : blocks) out.push_back(b.data_ptr<T>());
  return out;
}

std::vector<torch::Tensor> new_blocks(const Layout& lay, const torch::Tensor& like) {
  std::vector<torch::Tensor> out;
  for (int64_t rows : lay.block_rows)
    out.push_back(torch::empty({like.size(0), rows, like.size(2)}, like.options()));
  return out;
}

}  // namespace

// [E, (lmax+1)^2, C] -> m-blocks: out[e, r] = D^l[e, a_r] . x[e]^l
std::vector<torch::Tensor> rotate_in(torch::Tensor d, torch::Tensor x, torch::Tensor rows,
                                     torch::Tensor offsets, int64_t lmax, bool unit0) {
  const Layout lay = layout(rows, offsets, lmax);
  TORCH_CHECK(x.dim() == 3, "features must be [E, (lmax+1)^2, C]");
  d = d.contiguous();
  x = x.contiguous();
  auto out = new_blocks(lay, x);
  const int64_t c = check(lay, d, x, out), e_count = x.size(0), t = d.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rotate_in", [&] {
    const scalar_t* dp = d.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    each_edge<scalar_t>(lay, e_count, c, bases_of<scalar_t>(out),
                        [&](const auto& edge, int64_t e, scalar_t* const* rowp) {
                          edge.rotate_in(dp + e * t, xp + e * lay.width * c, rowp, unit0);
                        });
  });
  return out;
}

// m-blocks -> [E, (lmax+1)^2, C]: the transpose of rotate_in
torch::Tensor rotate_out(torch::Tensor d, std::vector<torch::Tensor> y, torch::Tensor rows,
                         torch::Tensor offsets, int64_t lmax, bool unit0) {
  const Layout lay = layout(rows, offsets, lmax);
  d = d.contiguous();
  for (auto& b : y) b = b.contiguous();
  TORCH_CHECK(!y.empty() && y[0].dim() == 3, "expected m-blocks [E, rows_m, C]");
  auto out = torch::empty({y[0].size(0), lay.width, y[0].size(2)}, y[0].options());
  const int64_t c = check(lay, d, out, y), e_count = out.size(0), t = d.size(1);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "rotate_out", [&] {
    const scalar_t* dp = d.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    each_edge<scalar_t>(lay, e_count, c, bases_of<scalar_t>(y),
                        [&](const auto& edge, int64_t e, scalar_t* const* rowp) {
                          edge.rotate_out(dp + e * t, rowp, op + e * lay.width * c, unit0);
                        });
  });
  return out;
}

// gd[e, offset_l + a_r (2l+1) + b] = g[e, r] . x[e, l^2 + b]: the D-gradient of rotate_in from
// its output gradient g (m-blocks) and input x (and of rotate_out, with g its input, x its
// output gradient)
torch::Tensor rotation_grad_d(torch::Tensor x, std::vector<torch::Tensor> g, torch::Tensor rows,
                              torch::Tensor offsets, int64_t lmax, int64_t t) {
  const Layout lay = layout(rows, offsets, lmax);
  x = x.contiguous();
  for (auto& b : g) b = b.contiguous();
  // zeros: rows of D that no kept edge-frame row uses (mmax < lmax) get no write
  auto out = static_cast<int64_t>(lay.degree.size()) == lay.width
                 ? torch::empty({x.size(0), t}, x.options())
                 : torch::zeros({x.size(0), t}, x.options());
  const int64_t c = check(lay, out, x, g), e_count = x.size(0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rotation_grad_d", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    each_edge<scalar_t>(lay, e_count, c, bases_of<scalar_t>(g),
                        [&](const auto& edge, int64_t e, scalar_t* const* rowp) {
                          edge.grad_d(rowp, xp + e * lay.width * c, op + e * t);
                        });
  });
  return out;
}

