// The Sodarace step of jelm.sim.physics as an XLA FFI custom call for the CPU.
//
// Same physics as jelm/sim/physics.py (the module docstring there lists the five stages
// of a substep; the ELM paper's Sodarace, Lehman et al. 2022, section 4): muscles as
// explicit damped springs, integration with Box2D's damping law, Jacobi sweeps of bone
// projection with per-bone weights, terrain contact along the surface normal with
// Coulomb friction and side entry, the inelastic velocity cut, the final clamp.
//
// Layout: one walker at a time (rows are independent), links edge-major: a link's
// correction is computed once and added to both ends, where the XLA step gathers it from
// per-joint slot tables. A walker's arithmetic does not depend on the batch around it,
// so results are bit-identical alone, padded or in any bucket. Rows run on a pool of
// threads (JELM_SIM_THREADS, default: the CPUs this process may use).
//
// Built on first use by jelm/sim/native.py; see there for the argument list.

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
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

struct Surf {
  float h, hs, c, cs;
};

inline void interp(const Table& t, const float* heights, float x, float* value, float* slope) {
  const float s = (x - t.x0) / t.dx;
  float fi = std::floor(s);
  fi = std::fmin(std::fmax(fi, 0.0f), static_cast<float>(t.n - 2));
  const int64_t i = static_cast<int64_t>(fi);
  float frac = s - static_cast<float>(i);
  frac = std::fmin(std::fmax(frac, 0.0f), 1.0f);
  const float h0 = heights[i], h1 = heights[i + 1];
  const bool inside = (s >= 0.0f) && (s <= static_cast<float>(t.n - 1));
  *slope = inside ? (h1 - h0) / t.dx : 0.0f;
  *value = h0 + frac * (h1 - h0);
}

constexpr float kNoSurface = 1.0e6f;  // terrain.NO_SURFACE

// A row's terrain. flat / no ceiling skip lookups that give constants (the XLA step's
// SurfaceSpec): the same numbers, without the interpolation.
struct Ground {
  Table g;
  const float* ceiling;
  float left, right;
  bool flat, has_ceiling;
  Surf at(float x) const {
    Surf s;
    if (flat) {
      s.h = g.h[0];
      s.hs = 0.0f;
    } else {
      interp(g, g.h, x, &s.h, &s.hs);
    }
    if (has_ceiling) {
      interp(g, ceiling, x, &s.c, &s.cs);
    } else {
      s.c = kNoSurface;
      s.cs = 0.0f;
    }
    return s;
  }
};

// physics._side_entry: a node deeper than max_depth that was shallower at its previous
// x entered through a steep face and goes back to that x.
inline float side_entry(float x, float y, float x_prev, Surf* here, const Surf& before,
                        float max_depth, const Ground& g) {
  // On flat ground without a ceiling the surfaces at x and x_prev are the same, so a
  // node is never shallower at its previous x: nothing to do.
  if (g.flat && !g.has_ceiling) return x;
  const float deep = std::max(here->h - y, y - here->c);
  const bool back = (deep > max_depth) && (std::max(before.h - y, y - before.c) < deep);
  if (back) {
    *here = before;
    return x_prev;
  }
  return x;
}

// physics._contact: the push out of ground, ceiling and walls.
// Without slopes (flat ground, no ceiling) the divisions are by exactly 1 and skipped.
inline void contact(float x, float y, const Surf& s, const Ground& g, float* px, float* py) {
  float below = std::min(y - s.h, 0.0f);
  if (!g.flat) below = below / (1.0f + s.hs * s.hs);
  float above = std::max(y - s.c, 0.0f);
  if (g.has_ceiling) above = above / (1.0f + s.cs * s.cs);
  float p = below * s.hs + above * s.cs;
  p = p + std::max(g.left - (x + p), 0.0f);
  p = p + std::min(g.right - (x + p), 0.0f);
  *px = p;
  *py = -below - above;
}

void simulate_row(const Params& p, int substeps, int iterations, int64_t steps, int64_t nj,
                  int64_t nl, const float* joint_mask, const float* link_mask,
                  const int32_t* li, const int32_t* lj, const float* rest,
                  const float* muscle, const float* amplitude, const float* cos_phase,
                  const float* sin_phase, const float* bone_weight, const Ground& g,
                  int32_t step0, float* pos, float* vel) {
  // Links whose ends are not joints of the row (never from jelm.sim.pack) are skipped
  // rather than read out of bounds.
  std::vector<int32_t> muscles, bones;
  int64_t used = 0;  // 1 + the highest joint an active link touches
  for (int64_t l = 0; l < nl; ++l) {
    if (link_mask[l] == 0.0f) continue;
    if (li[l] < 0 || li[l] >= nj || lj[l] < 0 || lj[l] >= nj) continue;
    if (muscle[l] != 0.0f) muscles.push_back(static_cast<int32_t>(l));
    if (bone_weight[l] != 0.0f) bones.push_back(static_cast<int32_t>(l));
    used = std::max<int64_t>(used, std::max(li[l], lj[l]) + 1);
  }
  // Padding joints after the last live or linked one only keep their position and get
  // zero velocity (what the masked XLA step gives them), so the loops stop before them.
  const int64_t padded = nj;
  while (nj > used && joint_mask[nj - 1] == 0.0f) --nj;
  for (int64_t n = nj; n < padded; ++n) vel[2 * n] = vel[2 * n + 1] = 0.0f;
  float x[kMaxJoints], y[kMaxJoints], vx[kMaxJoints], vy[kMaxJoints];
  float x0[kMaxJoints], y0[kMaxJoints], ax[kMaxJoints], ay[kMaxJoints];
  float push_x[kMaxJoints], push_y[kMaxJoints];
  bool live[kMaxJoints], touched[kMaxJoints];
  Surf before[kMaxJoints];
  for (int64_t n = 0; n < nj; ++n) {
    x[n] = pos[2 * n];
    y[n] = pos[2 * n + 1];
    vx[n] = vel[2 * n];
    vy[n] = vel[2 * n + 1];
    live[n] = joint_mask[n] != 0.0f;
  }
  const float h = p.dt / static_cast<float>(substeps);
  const float damp = 1.0f / (1.0f + h * p.damping);
  for (int64_t k = 0; k < steps; ++k) {
    const float step = static_cast<float>(step0 + k);
    for (int sub = 0; sub < substeps; ++sub) {
      const float t = (step + static_cast<float>(sub) / static_cast<float>(substeps)) * p.dt;
      const float s_t = std::sin(p.phase_speed * t), c_t = std::cos(p.phase_speed * t);
      // 1. muscles
      for (int64_t n = 0; n < nj; ++n) ax[n] = ay[n] = 0.0f;
      for (int32_t l : muscles) {
        const int32_t a = li[l], b = lj[l];
        const float dx = x[b] - x[a], dy = y[b] - y[a];
        const float dist = std::sqrt(dx * dx + dy * dy);
        const float inv = 1.0f / std::max(dist, 1e-6f);
        const float ux = dx * inv, uy = dy * inv;
        const float target =
            rest[l] * (1.0f + amplitude[l] * (s_t * cos_phase[l] + c_t * sin_phase[l]));
        const float rel = (vx[b] - vx[a]) * ux + (vy[b] - vy[a]) * uy;
        const float tension = p.stiffness * (dist - target) + p.muscle_damping * rel;
        ax[a] += tension * ux;
        ay[a] += tension * uy;
        ax[b] -= tension * ux;
        ay[b] -= tension * uy;
      }
      // 2. integrate
      for (int64_t n = 0; n < nj; ++n) {
        vx[n] = live[n] ? (vx[n] + h * ax[n]) * damp : 0.0f;
        vy[n] = live[n] ? (vy[n] + h * (ay[n] - p.gravity)) * damp : 0.0f;
        x0[n] = x[n];
        y0[n] = y[n];
        x[n] = x0[n] + h * vx[n];
        y[n] = y0[n] + h * vy[n];
        before[n] = g.at(x0[n]);
        push_x[n] = push_y[n] = 0.0f;
        touched[n] = false;
      }
      // 3. bones, contacts, friction
      for (int it = 0; it < iterations; ++it) {
        for (int64_t n = 0; n < nj; ++n) ax[n] = ay[n] = 0.0f;
        for (int32_t l : bones) {
          const int32_t a = li[l], b = lj[l];
          const float dx = x[b] - x[a], dy = y[b] - y[a];
          const float dist = std::sqrt(dx * dx + dy * dy);
          const float err = 0.5f * bone_weight[l] * (dist - rest[l]) / std::max(dist, 1e-6f);
          ax[a] += err * dx;
          ay[a] += err * dy;
          ax[b] -= err * dx;
          ay[b] -= err * dy;
        }
        for (int64_t n = 0; n < nj; ++n) {
          float nx = x[n] + ax[n];
          const float ny = y[n] + ay[n];
          Surf surf = g.at(nx);
          nx = side_entry(nx, ny, x0[n], &surf, before[n], p.max_depth, g);
          float px = 0.0f, py = 0.0f;
          if (live[n]) contact(nx, ny, surf, g, &px, &py);
          if (px == 0.0f && py == 0.0f) {  // no contact: friction keeps the whole step
            x[n] = nx;
            y[n] = ny;
            continue;
          }
          // physics._friction
          const float fx = nx + px, fy = ny + py;
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
          touched[n] = true;
          push_x[n] += px;
          push_y[n] += py;
        }
      }
      // 4. velocities, with the inelastic cut along the contact normal
      for (int64_t n = 0; n < nj; ++n) {
        const float pvx = live[n] ? (x[n] - x0[n]) / h : 0.0f;
        const float pvy = live[n] ? (y[n] - y0[n]) / h : 0.0f;
        const float push_len = std::sqrt(push_x[n] * push_x[n] + push_y[n] * push_y[n]);
        const float inv = 1.0f / std::max(push_len, 1e-12f);
        const float ux = push_x[n] * inv, uy = push_y[n] * inv;
        const float v_n = pvx * ux + pvy * uy;
        const float v_before = vx[n] * ux + vy[n] * uy;
        const float cut = (touched[n] && push_len > 0.0f)
                              ? std::max(v_n - std::max(v_before, 0.0f), 0.0f)
                              : 0.0f;
        vx[n] = pvx - cut * ux;
        vy[n] = pvy - cut * uy;
        // 5. the last clamp (positions only)
        Surf here = g.at(x[n]);
        float cx = side_entry(x[n], y[n], x0[n], &here, before[n], p.max_depth, g);
        cx = std::min(std::max(cx, g.left), g.right);
        const Surf at = g.at(cx);
        const float cy = std::max(std::min(y[n], at.c), at.h);
        x[n] = live[n] ? cx : x0[n];
        y[n] = live[n] ? cy : y0[n];
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
  parallel_rows(rows, [&](int64_t r) {
    const int64_t tr = trows == 1 ? 0 : r;
    Ground g;
    g.g = Table{ts[4 * tr], ts[4 * tr + 1], ground.typed_data() + tr * knots, knots};
    g.ceiling = ceiling.typed_data() + tr * knots;
    g.left = ts[4 * tr + 2];
    g.right = ts[4 * tr + 3];
    g.flat = flat_ground;
    g.has_ceiling = has_ceiling;
    const int64_t lo = r * nl;
    simulate_row(p, static_cast<int>(substeps), static_cast<int>(iterations), steps, nj, nl,
                 joint_mask.typed_data() + r * nj, link_mask.typed_data() + lo,
                 link_i.typed_data() + lo, link_j.typed_data() + lo, rest.typed_data() + lo,
                 muscle.typed_data() + lo, amplitude.typed_data() + lo,
                 cos_phase.typed_data() + lo, sin_phase.typed_data() + lo,
                 bone_weight.typed_data() + lo, g, step.typed_data()[r], pos + r * nj * 2,
                 vel + r * nj * 2);
  });
  return ffi::Error::Success();
}

}  // namespace

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
