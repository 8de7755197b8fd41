// The Sodarace step of jelm.sim as an XLA FFI custom call for the CPU (ELM paper,
// Lehman et al. 2022, section 4).
//
// Same physics as the XLA step, jelm/sim/xla/step.py (its module docstring lists the five
// stages of a substep): muscles as explicit damped springs, integration with Box2D's
// damping law, Jacobi sweeps of bone projection with per-bone weights, terrain contact
// along the surface normal with Coulomb friction and side entry, the inelastic velocity
// cut, the final clamp.
//
// Layout: one walker at a time (rows are independent), links edge-major: a link's
// correction is computed once and added to both ends, where the XLA step gathers it from
// per-joint slot tables. A walker's arithmetic does not depend on the batch around it,
// so results are bit-identical alone, padded or in any bucket. Rows of one topology run
// eight to a vector (the lane kernel), every other row alone (the row kernel), on a pool
// of threads (JELM_SIM_THREADS, default: the CPUs this process may use).
//
// One translation unit on purpose: the row and lane kernels share the per-joint helpers
// and must do the same float operations in the same order (a lane is bit-identical to
// its row), which the compiler keeps only while it inlines and vectorizes both from the
// same definitions; and the build is one compiler call whose cache key is this file.
//
// Built on first use by jelm/sim/native/build.py; jelm/sim/native/ffi.py binds the
// arguments (listed at the handler's definition, at the end of this file).

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMaxJoints = 256;

struct Params {
  float dt, gravity, damping, friction, stiffness, muscle_damping, phase_speed, max_depth;
};

struct Table {  // one heightfield row: x0 + k * dx, k < n
  float x0, dx;
  const float* h;
  int64_t n;
};

// cond ? a : b without a branch: the per-joint loops stay straight-line code that the
// compiler vectorizes (a ternary lets it sink the work of one side into a branch).
inline float pick(bool cond, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(cond);
  uint32_t ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const uint32_t r = (ia & m) | (ib & ~m);
  float out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// A heightfield at x: the height (linear between knots, clamped to the ends) and the
// slope (0 outside the table), as terrain.interp_heights.
inline void interp(const Table& t, const float* heights, float x, float* value, float* slope) {
  const float s = (x - t.x0) / t.dx;
  float fi = std::floor(s);
  fi = std::fmin(std::fmax(fi, 0.0f), static_cast<float>(t.n - 2));
  const int64_t i = static_cast<int64_t>(fi);
  float frac = s - static_cast<float>(i);
  frac = std::fmin(std::fmax(frac, 0.0f), 1.0f);
  const float h0 = heights[i], h1 = heights[i + 1];
  const bool inside = (s >= 0.0f) && (s <= static_cast<float>(t.n - 1));
  *slope = pick(inside, (h1 - h0) / t.dx, 0.0f);
  *value = h0 + frac * (h1 - h0);
}

constexpr float kNoSurface = 1.0e6f;  // terrain.NO_SURFACE

// A row's terrain: ground heightfield, ceiling heightfield (same grid), side walls.
struct Ground {
  Table g;
  const float* ceiling;
  float left, right;
  float h0;  // the ground's first knot: its height everywhere when it is flat
};

// The surfaces above and below x: ground height and slope, ceiling height and slope.
// kFlat / !kCeiling skip lookups that give constants (the XLA step's SurfaceSpec): the
// same numbers, without the interpolation.
template <bool kFlat, bool kCeiling>
inline void surface(const Ground& g, float x, float* h, float* hs, float* c, float* cs) {
  if constexpr (kFlat) {
    *h = g.h0;
    *hs = 0.0f;
  } else {
    interp(g.g, g.g.h, x, h, hs);
  }
  if constexpr (kCeiling) {
    interp(g.g, g.ceiling, x, c, cs);
  } else {
    *c = kNoSurface;
    *cs = 0.0f;
  }
}

// physics._side_entry: a node deeper than max_depth that was shallower at its previous
// x entered through a steep face and goes back to that x, with the surfaces found there
// (b*). On flat ground without a ceiling the surfaces at x and x_prev are the same, so a
// node is never shallower at its previous x: nothing to do.
template <bool kFlat, bool kCeiling>
inline float side_entry(float x, float y, float x_prev, float* h, float* hs, float* c,
                        float* cs, float bh, float bhs, float bc, float bcs, float max_depth) {
  if constexpr (kFlat && !kCeiling) return x;
  const float deep = std::max(*h - y, y - *c);
  const bool back = (deep > max_depth) && (std::max(bh - y, y - bc) < deep);
  *h = pick(back, bh, *h);
  *hs = pick(back, bhs, *hs);
  *c = pick(back, bc, *c);
  *cs = pick(back, bcs, *cs);
  return pick(back, x_prev, x);
}

// physics._contact: the push out of ground, ceiling and walls.
// Without slopes (flat ground, no ceiling) the divisions are by exactly 1 and skipped.
template <bool kFlat, bool kCeiling>
inline void contact(float x, float y, float h, float hs, float c, float cs, float left,
                    float right, float* px, float* py) {
  float below = std::min(y - h, 0.0f);
  if constexpr (!kFlat) below = below / (1.0f + hs * hs);
  float above = std::max(y - c, 0.0f);
  if constexpr (kCeiling) above = above / (1.0f + cs * cs);
  float p = below * hs + above * cs;
  p = p + std::max(left - (x + p), 0.0f);
  p = p + std::min(right - (x + p), 0.0f);
  *px = p;
  *py = -below - above;
}

// A row's links, split into muscles and bones, as compact arrays (struct of arrays).
struct Links {
  std::vector<int32_t> a, b;
  std::vector<float> rest, k1, k2, k3;  // muscles: amplitude, cos, sin; bones: weight
  std::vector<float> fx, fy;            // per-link force or correction of this pass
  void add(int32_t i, int32_t j, float r, float c1, float c2, float c3) {
    a.push_back(i);
    b.push_back(j);
    rest.push_back(r);
    k1.push_back(c1);
    k2.push_back(c2);
    k3.push_back(c3);
  }
  int64_t size() const { return static_cast<int64_t>(a.size()); }
};

// Sets the joints' accumulators to the sum of their links' (fx, fy): added to a link's
// first joint, subtracted from its second, in link order (the order fixes the float
// sums). T is a float (one walker, the row kernel) or a vector of lanes.
template <typename T>
inline void accumulate(int64_t links, const int32_t* a, const int32_t* b, const T* fx,
                       const T* fy, int64_t joints, T* ax, T* ay) {
  for (int64_t n = 0; n < joints; ++n) ax[n] = ay[n] = T{};
  for (int64_t l = 0; l < links; ++l) {
    ax[a[l]] += fx[l];
    ay[a[l]] += fy[l];
    ax[b[l]] -= fx[l];
    ay[b[l]] -= fy[l];
  }
}

// Joints are processed in blocks of this many, so the per-joint loops vectorize.
constexpr int64_t kBlock = 8;

// The per-joint state of a row, struct of arrays; joints past the row's count are dead.
struct alignas(32) Joints {
  float x[kMaxJoints], y[kMaxJoints], vx[kMaxJoints], vy[kMaxJoints];
  float x0[kMaxJoints], y0[kMaxJoints], ax[kMaxJoints], ay[kMaxJoints];
  float push_x[kMaxJoints], push_y[kMaxJoints], live[kMaxJoints], touched[kMaxJoints];
  float bh[kMaxJoints], bhs[kMaxJoints], bc[kMaxJoints], bcs[kMaxJoints];  // at x0
};

// The arguments of one call, by row: (B, J) joint and (B, L) link arrays, the step of
// each row, the terrain rows.
struct Inputs {
  const float* joint_mask;
  const float* link_mask;
  const int32_t* li;
  const int32_t* lj;
  const float* rest;
  const float* muscle;
  const float* amplitude;
  const float* cos_phase;
  const float* sin_phase;
  const float* bone_weight;
  const int32_t* step;
  const float* ts;      // (trows, 4)
  const float* ground;  // (trows, knots)
  int64_t trows, knots, nj, nl;
};

// The links and joints the kernels use: a link counts when it is active and both its
// ends are joints of the row; its kind is (muscle, bone).
inline bool link_counts(const Inputs& in, int64_t k) {
  return in.link_mask[k] != 0.0f && in.li[k] >= 0 && in.li[k] < in.nj && in.lj[k] >= 0 &&
         in.lj[k] < in.nj;
}

// A row's link slots that the kernels use, split into muscles and bones, and its joint
// count without the padding joints after the last live or linked one (those only keep
// their position and get zero velocity, what the masked XLA step gives them). Links
// whose ends are not joints of the row (never from jelm.sim.pack) are skipped rather
// than read out of bounds.
struct RowLinks {
  std::vector<int32_t> muscles, bones;  // link slots, in slot order
  int64_t nj;
};

RowLinks row_links(const Inputs& in, int64_t r) {
  RowLinks out;
  int64_t used = 0;  // 1 + the highest joint a counted link touches
  for (int64_t l = 0; l < in.nl; ++l) {
    const int64_t k = r * in.nl + l;
    if (!link_counts(in, k)) continue;
    if (in.muscle[k] != 0.0f) out.muscles.push_back(static_cast<int32_t>(l));
    if (in.bone_weight[k] != 0.0f) out.bones.push_back(static_cast<int32_t>(l));
    used = std::max<int64_t>(used, std::max(in.li[k], in.lj[k]) + 1);
  }
  const float* joint_mask = in.joint_mask + r * in.nj;
  out.nj = in.nj;
  while (out.nj > used && joint_mask[out.nj - 1] == 0.0f) --out.nj;
  return out;
}

template <bool kFlat, bool kCeiling>
void simulate_row(const Params& p, int substeps, int iterations, int64_t steps,
                  const Inputs& in, int64_t r, const Ground& g, float* pos, float* vel) {
  const RowLinks links = row_links(in, r);
  const int64_t lo = r * in.nl;
  Links muscles, bones;
  for (int32_t l : links.muscles) {
    muscles.add(in.li[lo + l], in.lj[lo + l], in.rest[lo + l], in.amplitude[lo + l],
                in.cos_phase[lo + l], in.sin_phase[lo + l]);
  }
  for (int32_t l : links.bones) {
    bones.add(in.li[lo + l], in.lj[lo + l], in.rest[lo + l], in.bone_weight[lo + l], 0.0f,
              0.0f);
  }
  muscles.fx.resize(muscles.size());
  muscles.fy.resize(muscles.size());
  bones.fx.resize(bones.size());
  bones.fy.resize(bones.size());
  // The loops stop after the last joint that counts, at the end of a block: the block's
  // extra joints are dead and never written back.
  const float* joint_mask = in.joint_mask + r * in.nj;
  const int64_t nj = links.nj;
  pos += r * in.nj * 2;
  vel += r * in.nj * 2;
  for (int64_t n = nj; n < in.nj; ++n) vel[2 * n] = vel[2 * n + 1] = 0.0f;
  const int32_t step0 = in.step[r];
  const int64_t nb = std::min<int64_t>((nj + kBlock - 1) / kBlock * kBlock, kMaxJoints);
  Joints J;
  float* const x = J.x;
  float* const y = J.y;
  float* const vx = J.vx;
  float* const vy = J.vy;
  float* const x0 = J.x0;
  float* const y0 = J.y0;
  float* const ax = J.ax;
  float* const ay = J.ay;
  float* const push_x = J.push_x;
  float* const push_y = J.push_y;
  float* const live = J.live;
  float* const touched = J.touched;
  float* const bh = J.bh;
  float* const bhs = J.bhs;
  float* const bc = J.bc;
  float* const bcs = J.bcs;
  for (int64_t n = 0; n < nb; ++n) {
    const bool real = n < nj;
    x[n] = real ? pos[2 * n] : 0.0f;
    y[n] = real ? pos[2 * n + 1] : 0.0f;
    vx[n] = real ? vel[2 * n] : 0.0f;
    vy[n] = real ? vel[2 * n + 1] : 0.0f;
    live[n] = (real && joint_mask[n] != 0.0f) ? 1.0f : 0.0f;
    bh[n] = bhs[n] = bc[n] = bcs[n] = 0.0f;
  }
  const float dt = p.dt / static_cast<float>(substeps);
  const float damp = 1.0f / (1.0f + dt * p.damping);
  const float md = p.max_depth;
  for (int64_t k = 0; k < steps; ++k) {
    const float step = static_cast<float>(step0 + k);
    for (int sub = 0; sub < substeps; ++sub) {
      const float t = (step + static_cast<float>(sub) / static_cast<float>(substeps)) * p.dt;
      const float s_t = std::sin(p.phase_speed * t), c_t = std::cos(p.phase_speed * t);
      // 1. muscles
      for (int64_t m = 0; m < muscles.size(); ++m) {
        const int32_t a = muscles.a[m], b = muscles.b[m];
        const float dx = x[b] - x[a], dy = y[b] - y[a];
        const float dist = std::sqrt(dx * dx + dy * dy);
        const float inv = 1.0f / std::max(dist, 1e-6f);
        const float ux = dx * inv, uy = dy * inv;
        const float target = muscles.rest[m] *
                             (1.0f + muscles.k1[m] * (s_t * muscles.k2[m] + c_t * muscles.k3[m]));
        const float rel = (vx[b] - vx[a]) * ux + (vy[b] - vy[a]) * uy;
        const float tension = p.stiffness * (dist - target) + p.muscle_damping * rel;
        muscles.fx[m] = tension * ux;
        muscles.fy[m] = tension * uy;
      }
      accumulate(muscles.size(), muscles.a.data(), muscles.b.data(), muscles.fx.data(),
                 muscles.fy.data(), nb, ax, ay);
      // 2. integrate
      for (int64_t n = 0; n < nb; ++n) {
        const bool on = live[n] != 0.0f;
        const float nvx = (vx[n] + dt * ax[n]) * damp;
        const float nvy = (vy[n] + dt * (ay[n] - p.gravity)) * damp;
        vx[n] = pick(on, nvx, 0.0f);
        vy[n] = pick(on, nvy, 0.0f);
        x0[n] = x[n];
        y0[n] = y[n];
        x[n] = x0[n] + dt * vx[n];
        y[n] = y0[n] + dt * vy[n];
        push_x[n] = push_y[n] = 0.0f;
        touched[n] = 0.0f;
      }
      if constexpr (!kFlat || kCeiling) {
        for (int64_t n = 0; n < nb; ++n) {
          surface<kFlat, kCeiling>(g, x0[n], &bh[n], &bhs[n], &bc[n], &bcs[n]);
        }
      }
      // 3. bones, contacts, friction
      for (int it = 0; it < iterations; ++it) {
        for (int64_t l = 0; l < bones.size(); ++l) {
          const int32_t a = bones.a[l], b = bones.b[l];
          const float dx = x[b] - x[a], dy = y[b] - y[a];
          const float dist = std::sqrt(dx * dx + dy * dy);
          const float err = 0.5f * bones.k1[l] * (dist - bones.rest[l]) / std::max(dist, 1e-6f);
          bones.fx[l] = err * dx;
          bones.fy[l] = err * dy;
        }
        accumulate(bones.size(), bones.a.data(), bones.b.data(), bones.fx.data(),
                   bones.fy.data(), nb, ax, ay);
        for (int64_t n = 0; n < nb; ++n) {
          float nx = x[n] + ax[n];
          const float ny = y[n] + ay[n];
          float h, hs, c, cs;
          surface<kFlat, kCeiling>(g, nx, &h, &hs, &c, &cs);
          nx = side_entry<kFlat, kCeiling>(nx, ny, x0[n], &h, &hs, &c, &cs, bh[n], bhs[n],
                                           bc[n], bcs[n], md);
          float px, py;
          contact<kFlat, kCeiling>(nx, ny, h, hs, c, cs, g.left, g.right, &px, &py);
          const bool on = live[n] != 0.0f;
          x[n] = nx;
          y[n] = ny;
          ax[n] = pick(on, px, 0.0f);  // this pass's push, for the friction below
          ay[n] = pick(on, py, 0.0f);
        }
        // physics._friction, for the nodes this pass pushed (the others keep the step)
        for (int64_t n = 0; n < nb; ++n) {
          const float px = ax[n], py = ay[n];
          if (px == 0.0f && py == 0.0f) continue;
          const float fx = x[n] + px, fy = y[n] + py;
          const float push_len = std::sqrt(px * px + py * py);
          const float inv = 1.0f / std::max(push_len, 1e-12f);
          const float ux = px * inv, uy = py * inv;
          const float mx = fx - x0[n], my = fy - y0[n];
          const float along = mx * ux + my * uy;
          const float tx = mx - along * ux, ty = my - along * uy;
          const float slide = std::sqrt(tx * tx + ty * ty);
          float keep = 1.0f - p.friction * push_len / std::max(slide, 1e-12f);
          keep = std::min(std::max(keep, 0.0f), 1.0f);
          if (!(push_len > 0.0f)) keep = 1.0f;
          x[n] = x0[n] + along * ux + keep * tx;
          y[n] = y0[n] + along * uy + keep * ty;
          touched[n] = 1.0f;
          push_x[n] += px;
          push_y[n] += py;
        }
      }
      // 4. velocities, with the inelastic cut along the contact normal: the cut for the
      // nodes pushed in this substep first (it is zero for the others) ...
      for (int64_t n = 0; n < nb; ++n) {
        ax[n] = ay[n] = 0.0f;
        if (touched[n] == 0.0f) continue;
        const bool on = live[n] != 0.0f;
        const float pvx = on ? (x[n] - x0[n]) / dt : 0.0f;
        const float pvy = on ? (y[n] - y0[n]) / dt : 0.0f;
        const float push_len = std::sqrt(push_x[n] * push_x[n] + push_y[n] * push_y[n]);
        const float inv = 1.0f / std::max(push_len, 1e-12f);
        const float ux = push_x[n] * inv, uy = push_y[n] * inv;
        const float v_n = pvx * ux + pvy * uy;
        const float v_before = vx[n] * ux + vy[n] * uy;
        const float cut = push_len > 0.0f ? std::max(v_n - std::max(v_before, 0.0f), 0.0f)
                                          : 0.0f;
        ax[n] = cut * ux;
        ay[n] = cut * uy;
      }
      // ... then every node's velocity and its last clamp
      for (int64_t n = 0; n < nb; ++n) {
        const bool on = live[n] != 0.0f;
        const float dx = (x[n] - x0[n]) / dt, dy = (y[n] - y0[n]) / dt;
        vx[n] = pick(on, dx, 0.0f) - ax[n];
        vy[n] = pick(on, dy, 0.0f) - ay[n];
        // 5. the last clamp (positions only)
        float h, hs, c, cs;
        surface<kFlat, kCeiling>(g, x[n], &h, &hs, &c, &cs);
        float cx = side_entry<kFlat, kCeiling>(x[n], y[n], x0[n], &h, &hs, &c, &cs, bh[n],
                                               bhs[n], bc[n], bcs[n], md);
        cx = std::min(std::max(cx, g.left), g.right);
        surface<kFlat, kCeiling>(g, cx, &h, &hs, &c, &cs);
        const float cy = std::max(std::min(y[n], c), h);
        const float stay_x = x0[n], stay_y = y0[n];
        x[n] = pick(on, cx, stay_x);
        y[n] = pick(on, cy, stay_y);
      }
    }
  }
  for (int64_t n = 0; n < nj; ++n) {
    pos[2 * n] = x[n];
    pos[2 * n + 1] = y[n];
    vel[2 * n] = vx[n];
    vel[2 * n + 1] = vy[n];
  }
}

// ---------------------------------------------------------------------------------------
// Lanes: eight walkers of one topology at once.
//
// Rows whose links, muscle flags, bone pattern and joint mask are the same (copies and
// parameter mutants of one program, what an ELM batch is mostly made of) run together,
// one walker per vector lane: every joint and link access is a plain vector load, where
// the row kernel gathers. Each lane does exactly the row kernel's float operations in
// the same order (IEEE sqrt and division, no contraction, the same selects), so a walker
// gets bit-identical results in a lane and alone. Flat ground without a ceiling only
// (SurfaceSpec): the terrains of one call that look surfaces up use the row kernel.

constexpr int kLanes = 8;
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8 splat(float a) { return v8{a, a, a, a, a, a, a, a}; }
// m ? a : b lane by lane (m from a vector comparison: all bits set or none).
inline v8 vpick(v8i m, v8 a, v8 b) {
  return reinterpret_cast<v8>((reinterpret_cast<v8i>(a) & m) | (reinterpret_cast<v8i>(b) & ~m));
}
inline v8 vmin(v8 a, v8 b) { return vpick(b < a, b, a); }  // std::min, NaNs included
inline v8 vmax(v8 a, v8 b) { return vpick(a < b, b, a); }  // std::max
inline v8 vsqrt(v8 a) {
  v8 r;
  for (int i = 0; i < kLanes; ++i) r[i] = std::sqrt(a[i]);
  return r;
}
inline bool any(v8i m) {
  bool out = false;
  for (int i = 0; i < kLanes; ++i) out |= m[i] != 0;
  return out;
}

// The rows of one lane group and where their inputs are.
struct LaneRows {
  int64_t row[kLanes];
  int count;  // lanes past count repeat row[0]; their results are not written
};

// Lane groups simulated since the library was loaded (jelm_lane_groups, for tests).
std::atomic<int64_t> lane_groups_run{0};

void simulate_lanes(const Params& p, int substeps, int iterations, int64_t steps,
                    const Inputs& in, const LaneRows& group, float* pos, float* vel) {
  lane_groups_run.fetch_add(1, std::memory_order_relaxed);
  const int64_t nl = in.nl, r0 = group.row[0];
  const float* joint_mask = in.joint_mask + r0 * in.nj;
  // The shared topology, from the first row (the grouping checked the others).
  const RowLinks links = row_links(in, r0);
  const std::vector<int32_t>&ml = links.muscles, &bl = links.bones;
  std::vector<int32_t> ma, mb, ba, bb;
  for (int32_t l : ml) {
    ma.push_back(in.li[r0 * nl + l]);
    mb.push_back(in.lj[r0 * nl + l]);
  }
  for (int32_t l : bl) {
    ba.push_back(in.li[r0 * nl + l]);
    bb.push_back(in.lj[r0 * nl + l]);
  }
  const int64_t nj = links.nj;
  const int64_t nm = static_cast<int64_t>(ma.size()), nbn = static_cast<int64_t>(ba.size());
  auto lane_row = [&](int w) { return group.row[w < group.count ? w : 0]; };
  // Per-lane link coefficients, link-major.
  std::vector<v8> m_rest(nm), m_amp(nm), m_cos(nm), m_sin(nm), m_fx(nm), m_fy(nm);
  std::vector<v8> b_rest(nbn), b_w(nbn), b_fx(nbn), b_fy(nbn);
  for (int w = 0; w < kLanes; ++w) {
    const int64_t base = lane_row(w) * nl;
    for (int64_t m = 0; m < nm; ++m) {
      m_rest[m][w] = in.rest[base + ml[m]];
      m_amp[m][w] = in.amplitude[base + ml[m]];
      m_cos[m][w] = in.cos_phase[base + ml[m]];
      m_sin[m][w] = in.sin_phase[base + ml[m]];
    }
    for (int64_t b = 0; b < nbn; ++b) {
      b_rest[b][w] = in.rest[base + bl[b]];
      b_w[b][w] = in.bone_weight[base + bl[b]];
    }
  }
  std::vector<v8> X(nj), Y(nj), VX(nj), VY(nj), X0(nj), Y0(nj), AX(nj), AY(nj), PX(nj),
      PY(nj);
  std::vector<v8i> touched(nj);
  std::vector<char> live(nj);
  v8 h0, left, right;
  bool same_step = true;
  int32_t step0[kLanes];
  for (int w = 0; w < kLanes; ++w) {
    const int64_t r = lane_row(w);
    const int64_t tr = in.trows == 1 ? 0 : r;
    h0[w] = in.ground[tr * in.knots];
    left[w] = in.ts[4 * tr + 2];
    right[w] = in.ts[4 * tr + 3];
    step0[w] = in.step[r];
    same_step = same_step && step0[w] == step0[0];
    const float* pw = pos + r * in.nj * 2;
    const float* vw = vel + r * in.nj * 2;
    for (int64_t n = 0; n < nj; ++n) {
      X[n][w] = pw[2 * n];
      Y[n][w] = pw[2 * n + 1];
      VX[n][w] = vw[2 * n];
      VY[n][w] = vw[2 * n + 1];
    }
  }
  for (int64_t n = 0; n < nj; ++n) live[n] = joint_mask[n] != 0.0f;
  const float dt = p.dt / static_cast<float>(substeps);
  const float damp = 1.0f / (1.0f + dt * p.damping);
  const v8 zero = splat(0.0f), one = splat(1.0f), tiny = splat(1e-6f), tinier = splat(1e-12f);
  const v8 no_surface = splat(kNoSurface);
  for (int64_t k = 0; k < steps; ++k) {
    for (int sub = 0; sub < substeps; ++sub) {
      v8 s_t, c_t;
      for (int w = 0; w < kLanes; ++w) {
        if (same_step && w > 0) {
          s_t[w] = s_t[0];
          c_t[w] = c_t[0];
          continue;
        }
        const float step = static_cast<float>(step0[w] + k);
        const float t = (step + static_cast<float>(sub) / static_cast<float>(substeps)) * p.dt;
        s_t[w] = std::sin(p.phase_speed * t);
        c_t[w] = std::cos(p.phase_speed * t);
      }
      // 1. muscles
      for (int64_t m = 0; m < nm; ++m) {
        const int32_t a = ma[m], b = mb[m];
        const v8 dx = X[b] - X[a], dy = Y[b] - Y[a];
        const v8 dist = vsqrt(dx * dx + dy * dy);
        const v8 inv = one / vmax(dist, tiny);
        const v8 ux = dx * inv, uy = dy * inv;
        const v8 target = m_rest[m] * (one + m_amp[m] * (s_t * m_cos[m] + c_t * m_sin[m]));
        const v8 rel = (VX[b] - VX[a]) * ux + (VY[b] - VY[a]) * uy;
        const v8 tension = splat(p.stiffness) * (dist - target) + splat(p.muscle_damping) * rel;
        m_fx[m] = tension * ux;
        m_fy[m] = tension * uy;
      }
      accumulate(nm, ma.data(), mb.data(), m_fx.data(), m_fy.data(), nj, AX.data(), AY.data());
      // 2. integrate
      for (int64_t n = 0; n < nj; ++n) {
        VX[n] = live[n] ? (VX[n] + splat(dt) * AX[n]) * splat(damp) : zero;
        VY[n] = live[n] ? (VY[n] + splat(dt) * (AY[n] - splat(p.gravity))) * splat(damp) : zero;
        X0[n] = X[n];
        Y0[n] = Y[n];
        X[n] = X0[n] + splat(dt) * VX[n];
        Y[n] = Y0[n] + splat(dt) * VY[n];
        PX[n] = PY[n] = zero;
        touched[n] = v8i{};
      }
      // 3. bones, contacts, friction
      for (int it = 0; it < iterations; ++it) {
        for (int64_t l = 0; l < nbn; ++l) {
          const int32_t a = ba[l], b = bb[l];
          const v8 dx = X[b] - X[a], dy = Y[b] - Y[a];
          const v8 dist = vsqrt(dx * dx + dy * dy);
          const v8 err = splat(0.5f) * b_w[l] * (dist - b_rest[l]) / vmax(dist, tiny);
          b_fx[l] = err * dx;
          b_fy[l] = err * dy;
        }
        accumulate(nbn, ba.data(), bb.data(), b_fx.data(), b_fy.data(), nj, AX.data(),
                   AY.data());
        for (int64_t n = 0; n < nj; ++n) {
          const v8 nx = X[n] + AX[n], ny = Y[n] + AY[n];
          X[n] = nx;
          Y[n] = ny;
          if (!live[n]) continue;
          // physics._contact on flat ground without a ceiling (slopes 0)
          const v8 below = vmin(ny - h0, zero);
          const v8 above = vmax(ny - no_surface, zero);
          v8 q = below * zero + above * zero;
          q = q + vmax(left - (nx + q), zero);
          q = q + vmin(right - (nx + q), zero);
          const v8 px = q, py = -below - above;
          const v8i hit = ~((px == zero) & (py == zero));
          if (!any(hit)) continue;
          // physics._friction, kept in the lanes this pass pushed
          const v8 fx = nx + px, fy = ny + py;
          const v8 push_len = vsqrt(px * px + py * py);
          const v8 inv = one / vmax(push_len, tinier);
          const v8 ux = px * inv, uy = py * inv;
          const v8 mx = fx - X0[n], my = fy - Y0[n];
          const v8 along = mx * ux + my * uy;
          const v8 tx = mx - along * ux, ty = my - along * uy;
          const v8 slide = vsqrt(tx * tx + ty * ty);
          v8 keep = one - splat(p.friction) * push_len / vmax(slide, tinier);
          keep = vmin(vmax(keep, zero), one);
          keep = vpick(push_len > zero, keep, one);
          X[n] = vpick(hit, X0[n] + along * ux + keep * tx, nx);
          Y[n] = vpick(hit, Y0[n] + along * uy + keep * ty, ny);
          touched[n] |= hit;
          PX[n] = vpick(hit, PX[n] + px, PX[n]);
          PY[n] = vpick(hit, PY[n] + py, PY[n]);
        }
      }
      // 4. velocities, with the inelastic cut along the contact normal; 5. the last clamp
      for (int64_t n = 0; n < nj; ++n) {
        const v8 stay_x = X0[n], stay_y = Y0[n];
        if (!live[n]) {
          VX[n] = zero - zero;
          VY[n] = zero - zero;
          X[n] = stay_x;
          Y[n] = stay_y;
          continue;
        }
        const v8 pvx = (X[n] - X0[n]) / splat(dt), pvy = (Y[n] - Y0[n]) / splat(dt);
        v8 cx = zero, cy = zero;
        if (any(touched[n])) {
          const v8 push_len = vsqrt(PX[n] * PX[n] + PY[n] * PY[n]);
          const v8 inv = one / vmax(push_len, tinier);
          const v8 ux = PX[n] * inv, uy = PY[n] * inv;
          const v8 v_n = pvx * ux + pvy * uy;
          const v8 v_before = VX[n] * ux + VY[n] * uy;
          const v8 cut = vpick(push_len > zero, vmax(v_n - vmax(v_before, zero), zero), zero);
          cx = vpick(touched[n], cut * ux, zero);
          cy = vpick(touched[n], cut * uy, zero);
        }
        VX[n] = pvx - cx;
        VY[n] = pvy - cy;
        const v8 clamped_x = vmin(vmax(X[n], left), right);
        X[n] = clamped_x;
        Y[n] = vmax(vmin(Y[n], no_surface), h0);
      }
    }
  }
  for (int w = 0; w < group.count; ++w) {
    const int64_t r = group.row[w];
    float* pw = pos + r * in.nj * 2;
    float* vw = vel + r * in.nj * 2;
    for (int64_t n = 0; n < nj; ++n) {
      pw[2 * n] = X[n][w];
      pw[2 * n + 1] = Y[n][w];
      vw[2 * n] = VX[n][w];
      vw[2 * n + 1] = VY[n][w];
    }
    for (int64_t n = nj; n < in.nj; ++n) vw[2 * n] = vw[2 * n + 1] = 0.0f;
  }
}

uint64_t topology_hash(const Inputs& in, int64_t r) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  for (int64_t n = 0; n < in.nj; ++n) mix(in.joint_mask[r * in.nj + n] != 0.0f);
  for (int64_t l = 0; l < in.nl; ++l) {
    const int64_t k = r * in.nl + l;
    if (!link_counts(in, k)) continue;
    mix(static_cast<uint64_t>(l));
    mix(static_cast<uint32_t>(in.li[k]));
    mix(static_cast<uint32_t>(in.lj[k]));
    mix((in.muscle[k] != 0.0f) + 2 * (in.bone_weight[k] != 0.0f));
  }
  return h;
}

bool same_topology(const Inputs& in, int64_t r, int64_t s) {
  for (int64_t n = 0; n < in.nj; ++n) {
    if ((in.joint_mask[r * in.nj + n] != 0.0f) != (in.joint_mask[s * in.nj + n] != 0.0f)) {
      return false;
    }
  }
  for (int64_t l = 0; l < in.nl; ++l) {
    const int64_t a = r * in.nl + l, b = s * in.nl + l;
    const bool ca = link_counts(in, a), cb = link_counts(in, b);
    if (ca != cb) return false;
    if (!ca) continue;
    if (in.li[a] != in.li[b] || in.lj[a] != in.lj[b] ||
        (in.muscle[a] != 0.0f) != (in.muscle[b] != 0.0f) ||
        (in.bone_weight[a] != 0.0f) != (in.bone_weight[b] != 0.0f)) {
      return false;
    }
  }
  return true;
}

// A group needs this many rows of one topology to beat running them alone.
constexpr int kMinLanes = 2;

// Splits the rows into lane groups of one topology and rows that run alone.
void plan_lanes(const Inputs& in, int64_t rows, std::vector<LaneRows>* groups,
                std::vector<int64_t>* alone) {
  std::vector<std::pair<uint64_t, int64_t>> keyed(rows);
  for (int64_t r = 0; r < rows; ++r) keyed[r] = {topology_hash(in, r), r};
  std::sort(keyed.begin(), keyed.end());
  std::vector<int64_t> members, rest;
  for (size_t i = 0; i < keyed.size();) {
    size_t j = i;
    while (j < keyed.size() && keyed[j].first == keyed[i].first) ++j;
    // One hash: rows equal to the first form a class; others (a collision) go alone.
    members.clear();
    for (size_t k = i; k < j; ++k) {
      if (k == i || same_topology(in, keyed[i].second, keyed[k].second)) {
        members.push_back(keyed[k].second);
      } else {
        alone->push_back(keyed[k].second);
      }
    }
    for (size_t k = 0; k < members.size(); k += kLanes) {
      const int count = static_cast<int>(std::min<size_t>(kLanes, members.size() - k));
      if (count < kMinLanes) {
        for (int w = 0; w < count; ++w) alone->push_back(members[k + w]);
        continue;
      }
      LaneRows g;
      g.count = count;
      for (int w = 0; w < kLanes; ++w) g.row[w] = members[k + (w < count ? w : 0)];
      groups->push_back(g);
    }
    i = j;
  }
}

int thread_count() {
  if (const char* env = std::getenv("JELM_SIM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

template <typename F>
void parallel_rows(int64_t rows, F&& body) {
  const int threads = static_cast<int>(std::min<int64_t>(thread_count(), rows));
  if (threads <= 1) {
    for (int64_t r = 0; r < rows; ++r) body(r);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t r = next.fetch_add(1); r < rows; r = next.fetch_add(1)) body(r);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

ffi::Error Simulate(ffi::Buffer<ffi::F32> pos_in, ffi::Buffer<ffi::F32> vel_in,
                    ffi::Buffer<ffi::S32> step, ffi::Buffer<ffi::F32> joint_mask,
                    ffi::Buffer<ffi::F32> link_mask, ffi::Buffer<ffi::S32> link_i,
                    ffi::Buffer<ffi::S32> link_j, ffi::Buffer<ffi::F32> rest,
                    ffi::Buffer<ffi::F32> muscle, ffi::Buffer<ffi::F32> amplitude,
                    ffi::Buffer<ffi::F32> cos_phase, ffi::Buffer<ffi::F32> sin_phase,
                    ffi::Buffer<ffi::F32> bone_weight, ffi::Buffer<ffi::F32> terrain_scalars,
                    ffi::Buffer<ffi::F32> ground, ffi::Buffer<ffi::F32> ceiling,
                    ffi::Buffer<ffi::F32> params, int64_t steps, int64_t substeps,
                    int64_t iterations, bool flat_ground, bool has_ceiling,
                    ffi::ResultBuffer<ffi::F32> pos_out,
                    ffi::ResultBuffer<ffi::F32> vel_out) {
  const auto pdims = pos_in.dimensions();
  if (pdims.size() != 3 || pdims[2] != 2) {
    return ffi::Error::InvalidArgument("pos must be (B, J, 2)");
  }
  const int64_t rows = pdims[0], nj = pdims[1];
  const int64_t nl = link_i.dimensions().back();
  const auto gdims = ground.dimensions();
  const int64_t trows = gdims[0], knots = gdims[1];
  if (nj > kMaxJoints) return ffi::Error::InvalidArgument("more than 256 joints");
  if (knots < 2) return ffi::Error::InvalidArgument("a heightfield needs 2 points");
  if (trows != 1 && trows != rows) {
    return ffi::Error::InvalidArgument("terrain rows must be 1 or the batch size");
  }
  if (params.element_count() < 8) return ffi::Error::InvalidArgument("8 params expected");
  if (substeps < 1 || iterations < 0 || steps < 0) {
    return ffi::Error::InvalidArgument("bad substeps, iterations or steps");
  }
  const float* pv = params.typed_data();
  const Params p{pv[0], pv[1], pv[2], pv[3], pv[4], pv[5], pv[6], pv[7]};
  float* pos = pos_out->typed_data();
  float* vel = vel_out->typed_data();
  std::copy_n(pos_in.typed_data(), pos_in.element_count(), pos);
  std::copy_n(vel_in.typed_data(), vel_in.element_count(), vel);
  const float* ts = terrain_scalars.typed_data();  // (trows, 4): x0, dx, left, right
  const Inputs in{joint_mask.typed_data(), link_mask.typed_data(), link_i.typed_data(),
                  link_j.typed_data(),     rest.typed_data(),      muscle.typed_data(),
                  amplitude.typed_data(),  cos_phase.typed_data(), sin_phase.typed_data(),
                  bone_weight.typed_data(), step.typed_data(),     ts,
                  ground.typed_data(),     trows,                  knots,
                  nj,                      nl};
  // Rows of one topology run in lane groups (flat ground, no ceiling), the rest alone.
  std::vector<LaneRows> groups;
  std::vector<int64_t> alone;
  if (flat_ground && !has_ceiling) {
    plan_lanes(in, rows, &groups, &alone);
  } else {
    alone.resize(rows);
    for (int64_t r = 0; r < rows; ++r) alone[r] = r;
  }
  const int64_t tasks = static_cast<int64_t>(groups.size() + alone.size());
  parallel_rows(tasks, [&](int64_t task) {
    if (task < static_cast<int64_t>(groups.size())) {
      simulate_lanes(p, static_cast<int>(substeps), static_cast<int>(iterations), steps, in,
                     groups[task], pos, vel);
      return;
    }
    const int64_t r = alone[task - groups.size()];
    const int64_t tr = trows == 1 ? 0 : r;
    Ground g;
    g.g = Table{ts[4 * tr], ts[4 * tr + 1], ground.typed_data() + tr * knots, knots};
    g.ceiling = ceiling.typed_data() + tr * knots;
    g.left = ts[4 * tr + 2];
    g.right = ts[4 * tr + 3];
    g.h0 = g.g.h[0];
    const auto row = flat_ground ? (has_ceiling ? simulate_row<true, true>
                                                : simulate_row<true, false>)
                                 : (has_ceiling ? simulate_row<false, true>
                                                : simulate_row<false, false>);
    row(p, static_cast<int>(substeps), static_cast<int>(iterations), steps, in, r, g, pos,
        vel);
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" int64_t jelm_lane_groups() {
  return lane_groups_run.load(std::memory_order_relaxed);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JelmSodaraceSimulate, Simulate,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // pos (B, J, 2)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // vel (B, J, 2)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // step (B,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // joint_mask (B, J)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // link_mask (B, L)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // link_i (B, L)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // link_j (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // rest (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // muscle (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // amplitude (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cos_phase (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // sin_phase (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bone_weight (B, L)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // terrain (T, 4)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ground (T, K)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ceiling (T, K)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // params (8,)
                                  .Attr<int64_t>("steps")
                                  .Attr<int64_t>("substeps")
                                  .Attr<int64_t>("iterations")
                                  .Attr<bool>("flat_ground")  // SurfaceSpec.flat_ground
                                  .Attr<bool>("ceiling")  // SurfaceSpec.ceiling
                                  .Ret<ffi::Buffer<ffi::F32>>()  // pos
                                  .Ret<ffi::Buffer<ffi::F32>>()  // vel
);
